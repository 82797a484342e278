"""``python -m verify.checker RESULT.json ...``: re-check result files with the trusted base alone.

Exit 0 if every file holds, 1 if any does not, 2 on usage errors.
"""
import sys

from . import check_file

USAGE = "usage: python -m verify.checker RESULT.json [RESULT.json ...]"


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print(USAGE + "\nRe-checks each ptverify-result/2 file (side files are looked up next to it); "
              "exit 0 only if every one holds.", file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    failed = 0
    for path in args:
        ok, msg = check_file(path)
        failed += not ok
        print(f"{'OK' if ok else 'FAILED'}  {path}: {msg}")
    if len(args) > 1:
        print(f"{len(args) - failed} of {len(args)} hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
