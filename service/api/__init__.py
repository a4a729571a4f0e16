"""HTTP layer: thin routes that parse, authenticate and map errors; the work is in service.scoring."""
