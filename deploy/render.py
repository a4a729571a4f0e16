"""Render a kustomization (the subset these manifests use) and validate it against the Kubernetes schemas.

`kubectl kustomize` is not a Python package, so CI renders with this file instead: resources (files and
directories), images, and patches (strategic merge, matched by kind and name, lists merged by the same keys
Kubernetes uses). Any other kustomization field is an error here, so the subset cannot silently drift from
what `kubectl apply -k` would do. Validation uses kubernetes-validate (schemas shipped in the PyPI package),
strict: an unknown field fails.

    python deploy/render.py deploy/overlays/gpu            # print the rendered YAML
    python deploy/render.py --validate deploy/overlays/*   # render and validate each
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}
# Strategic-merge keys of the list fields these manifests patch (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "envFrom": None,
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
Doc = dict[str, Any]


def _load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge of `patch` into `base`: maps merge, lists with a merge key merge by it, others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and MERGE_KEYS.get(key or ""):
        mk = MERGE_KEYS[key or ""]
        out_list = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out_list) if x.get(mk) == item.get(mk)), None)
            if match is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[match] = merge(out_list[match], item)
        return out_list
    return copy.deepcopy(patch)


def _image(docs: list[Doc], images: list[dict[str, str]]) -> None:
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for img in images:
                if c.get("image", "").split(":")[0] == img["name"]:
                    name = img.get("newName", img["name"])
                    c["image"] = f"{name}:{img['newTag']}" if "newTag" in img else name


def render(folder: Path) -> list[Doc]:
    kfile = folder / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise SystemExit(f"{kfile}: fields {sorted(unknown)} are not supported by deploy/render.py")
    docs: list[Doc] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        docs += render(path) if path.is_dir() else _load_all(path)
    for p in k.get("patches", []):
        for patch in _load_all(folder / p["path"]):
            target = p.get("target", {})
            kind, name = target.get("kind", patch["kind"]), target.get("name", patch["metadata"]["name"])
            hits = [i for i, d in enumerate(docs) if d["kind"] == kind and d["metadata"]["name"] == name]
            if len(hits) != 1:
                raise SystemExit(f"{folder / p['path']}: patch matches {len(hits)} resources ({kind}/{name})")
            docs[hits[0]] = merge(docs[hits[0]], patch)
    _image(docs, k.get("images", []))
    return docs


def validate(docs: list[Doc], version: str) -> list[str]:
    import kubernetes_validate

    errors = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {'.'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: no schema ({exc})")
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--validate", action="store_true", help="Validate instead of printing.")
    ap.add_argument("--kubernetes-version", default="1.33.0", help="Schemas to validate against.")
    args = ap.parse_args(argv)
    failed = False
    for folder in args.folders:
        docs = render(folder)
        if not args.validate:
            sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
            continue
        errors = validate(docs, args.kubernetes_version)
        kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        print(f"{folder}: {len(docs)} resources {'FAIL' if errors else 'ok'} ({kinds})")
        for e in errors:
            print(f"  {e}")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
