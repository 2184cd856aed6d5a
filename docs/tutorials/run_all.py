"""Runs every tutorial script; exits non-zero if one fails (CI runs this).

Usage: python docs/tutorials/run_all.py [NAME ...]
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TUTORIALS = ('own_loop', 'scanned_transformer', 'experiments', 'tickets',
             'export_inference')
TIMEOUT_S = 900


def main(names) -> int:
  unknown = sorted(set(names) - set(TUTORIALS))
  if unknown:
    print(f'error: unknown tutorials {unknown}; valid: {", ".join(TUTORIALS)}',
          file=sys.stderr)
    return 2
  failed = []
  for name in names or TUTORIALS:
    start = time.time()
    try:
      result = subprocess.run(
          [sys.executable, os.path.join(HERE, f'{name}.py')], cwd=ROOT,
          capture_output=True, text=True, timeout=TIMEOUT_S)
      ok, out = result.returncode == 0, result.stdout + result.stderr
    except subprocess.TimeoutExpired:
      ok, out = False, f'timed out after {TIMEOUT_S} s'
    print(f'{name}: {"ok" if ok else "FAILED"} in {time.time() - start:.0f} s',
          flush=True)
    if not ok:
      failed.append(name)
      print(out[-4000:], file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
