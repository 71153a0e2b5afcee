"""Validates every resource tour.mjs kept with the FHIR R4 models of SMART on FHIR's Python
client (fhirclient 4.4.0) in strict mode: an unknown element, a wrong type or a missing required
element raises. Each model is also written back (as_json), which checks cardinalities again.

    python validate.py OUT_DIR
"""

import json
import pathlib
import sys

from fhirclient.models.fhirelementfactory import FHIRElementFactory


def main(directory: str) -> int:
    # The models are strict: a resource with an element R4 does not define is refused.
    try:
        FHIRElementFactory.instantiate("Patient", {"resourceType": "Patient", "colour": "red"})
        print("FAIL fhirclient accepted a Patient with an unknown element")
        return 1
    except Exception:
        pass
    files = sorted(pathlib.Path(directory).glob("*.json"))
    failures = 0
    for path in files:
        resource = json.loads(path.read_text())
        try:
            # Strict is the default of every model: errors are raised, not logged.
            model = FHIRElementFactory.instantiate(resource["resourceType"], resource)
            model.as_json()
        except Exception as error:  # fhirclient raises FHIRValidationError and plain errors
            failures += 1
            print(f"FAIL {path.name}: {error}")
    print(f"fhirclient {len(files) - failures} of {len(files)} resources valid in strict mode")
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
