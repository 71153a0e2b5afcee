"""Each function's bootstrap and the size of its deployment zip (deflated, as `sam deploy`
uploads it), from a `sam build` output folder.

    python3 scripts/lib/package_sizes.py .aws-sam/build

Standard library only.
"""

import io
import sys
import zipfile
from pathlib import Path


def zipped_size(bootstrap: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(bootstrap, "bootstrap")
    return buffer.getbuffer().nbytes


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"{'function':<28} {'bootstrap':>14} {'zip':>12}")
    for function in sorted(Path(sys.argv[1]).glob("*Function")):
        bootstrap = function / "bootstrap"
        if bootstrap.is_file():
            print(f"{function.name:<28} {bootstrap.stat().st_size:>14} {zipped_size(bootstrap):>12}")


if __name__ == "__main__":
    main()
