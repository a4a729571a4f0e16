"""The embedded default head: `darling-reward classifier train --head --split train` (see head.json)."""
