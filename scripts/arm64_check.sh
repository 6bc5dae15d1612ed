#!/usr/bin/env bash
# Prove that the edge-ser runtime installs and runs on ARM64 (aarch64) without torch, under QEMU user emulation,
# and that its predictions match the x86 host's.
#
# Usage: scripts/arm64_check.sh BUNDLE CLIPS [WORKDIR]        (run as root; VARIANT=name to pick a variant)
#   BUNDLE   a bundle directory (edge-ser export)
#   CLIPS    a folder of audio; the first N (default 20) sorted *.wav/*.flac are used
#   WORKDIR  cache and results (default: <repo>/build/arm64, git-ignored); the Debian bookworm arm64 root
#            filesystem and the venv inside it are cached there, so a rerun skips debootstrap and the downloads.
# Environment: VARIANT, N, QEMU_CPU (default cortex-a76 = Pi 5; cortex-a72 = Pi 4), MIRROR (Debian mirror,
#   default http://deb.debian.org/debian), PIP_INDEX_URL (default: the host's pip index, else PyPI),
#   HOSTPY (host Python with edge-ser installed, default <repo>/.venv/bin/python).
# Writes WORKDIR/arm64_check.json; exits non-zero if any label differs or max |dp| >= 0.02.
# Timings under emulation are MEANINGLESS: nothing here measures, or may be quoted as, Raspberry Pi speed.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '5,13s/^# \{0,1\}//p' "$0" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$(realpath "$1"); CLIPS=$(realpath "$2"); WORK=$(realpath -m "${3:-$REPO/build/arm64}")
N=${N:-20}; MIRROR=${MIRROR:-http://deb.debian.org/debian}
HOSTPY=${HOSTPY:-$REPO/.venv/bin/python}
ROOT=$WORK/rootfs; IN=/opt/arm64check          # IN: the check's folder, as seen inside the chroot
START=$(date +%s)

# 1. Host tools: debootstrap and qemu-user-static (+ binfmt-support to register the aarch64 interpreter).
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root, or install first: apt-get install debootstrap qemu-user-static binfmt-support" >&2
    exit 2
  fi
  apt-get update -q && apt-get install -y -q debootstrap qemu-user-static binfmt-support
fi
[ "$(id -u)" = 0 ] || { echo "error: chroot and mounts need root" >&2; exit 2; }
# The kernel must hand aarch64 ELF binaries to qemu (binfmt_misc); mount it and enable the entry if needed.
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

# Only /dev is mounted in the chroot, on purpose. Not /proc: qemu-user 7.2 shows the host's x86 /proc/cpuinfo, so
# edge-ser would read x86 flags (it falls back to numpy's CPU features, i.e. the emulated HWCAPs, without it).
# Not /proc + /sys together: onnxruntime's cpuinfo then parses x86 /proc/cpuinfo as ARM and segfaults at import.
unmount() { for m in dev sys proc; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done; return 0; }
trap unmount EXIT
# A clean environment inside the chroot (the host's PIP_* and config point to host-only paths).
# QEMU_CPU: the emulated core; cortex-a76 = Raspberry Pi 5 (dot product), cortex-a72 = Pi 4 (plain NEON).
QEMU_CPU=${QEMU_CPU:-cortex-a76}
in_chroot() { QEMU_CPU=$QEMU_CPU chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$QEMU_CPU" \
  PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
  PIP_CONFIG_FILE=/dev/null PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_INDEX_URL="$INDEX" \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"; }

# 2. Debian bookworm arm64 root filesystem, cached (the marker file is written only after a full second stage).
if [ ! -e "$ROOT/.arm64check-ok" ]; then
  unmount
  if grep -q " $ROOT/" /proc/mounts; then echo "error: mounts left under $ROOT" >&2; exit 1; fi
  rm -rf --one-file-system "$ROOT"; mkdir -p "$ROOT"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,libsndfile1 bookworm "$ROOT" "$MIRROR"
  cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"   # only needed if binfmt lacks the F (fix-binary) flag
  chroot "$ROOT" /debootstrap/debootstrap --second-stage
  touch "$ROOT/.arm64check-ok"
fi
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle (it may hold a proxy's CA) and the host's index; the host's file:// extra indexes and
# find-links folders are x86-local and not reachable from the chroot, so they are left out.
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/certs/host-ca.crt"
INDEX=${PIP_INDEX_URL:-$("$HOSTPY" -m pip config get global.index-url 2>/dev/null || true)}
INDEX=${INDEX:-https://pypi.org/simple}

# 3. The runtime wheel, built on the host from this checkout; bundle, clips and the snippet copied in.
rm -rf "$WORK/wheel" "$ROOT$IN/bundle" "$ROOT$IN/clips" "$ROOT$IN/wheel"
mkdir -p "$WORK/wheel" "$ROOT$IN/clips"
"$HOSTPY" -m pip wheel -q --no-deps -w "$WORK/wheel" "$REPO" >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log" >&2; exit 1; }
WHEEL=$IN/wheel/$(basename "$WORK"/wheel/edge_ser-*.whl)
cp -r "$WORK/wheel" "$ROOT$IN/wheel"; cp -a "$BUNDLE" "$ROOT$IN/bundle"
mapfile -t FILES < <(find "$CLIPS" -maxdepth 1 -type f \( -name '*.wav' -o -name '*.flac' \) | LC_ALL=C sort)
for f in "${FILES[@]:0:$N}"; do cp "$f" "$ROOT$IN/clips/"; done   # (no `| head`: SIGPIPE under pipefail)
NCLIPS=$(ls "$ROOT$IN/clips" | wc -l); [ "$NCLIPS" -gt 0 ] || { echo "error: no clips in $CLIPS" >&2; exit 1; }
VARIANT=${VARIANT:-$("$HOSTPY" -c 'import sys; from edge_ser.bundle import load_bundle
b = load_bundle(sys.argv[1]); print("student-int8-u8s8" if "student-int8-u8s8" in b.variants else b.manifest.default_variant)' "$BUNDLE")}
cat > "$ROOT$IN/predict.py" <<'EOF'
# predict.py BUNDLE VARIANT CLIPS OUT: one JSON line per clip, then a last line of facts about this platform.
import json, os, platform, sys
from pathlib import Path
import numpy, onnxruntime
from edge_ser import audio
from edge_ser.recognizer import Recognizer
from edge_ser.targets import detect_target
bundle, variant, clips, out = sys.argv[1:5]
rec = Recognizer(bundle, variant=variant)
with open(out, "w") as f:
    for p in sorted(Path(clips).iterdir()):
        r = rec.predict(audio.load_audio(p), audio.SAMPLE_RATE)
        f.write(json.dumps({"file": p.name, "label": r.label, "probs": r.probs}) + "\n")
    facts = {"machine": platform.machine(), "target": detect_target(), "python": platform.python_version(),
             "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "variant": rec.variant,
             "qemu_cpu": os.environ.get("QEMU_CPU"), "torch_imported": "torch" in sys.modules}   # no timings
    f.write(json.dumps({"facts": facts}) + "\n")
print(json.dumps(facts))
EOF

# 4. Inside the chroot: a venv with the wheel and its aarch64 dependencies from the index; no torch allowed.
[ -x "$ROOT$IN/venv/bin/python" ] || in_chroot python3 -m venv "$IN/venv"
in_chroot "$IN/venv/bin/pip" install -q "$WHEEL"
in_chroot "$IN/venv/bin/pip" install -q --force-reinstall --no-deps "$WHEEL"
if in_chroot "$IN/venv/bin/pip" show -q torch 2>/dev/null; then echo "error: torch is installed in the arm64 venv" >&2; exit 1; fi
echo "== aarch64: torch not installed; $(in_chroot "$IN/venv/bin/pip" list 2>/dev/null | grep -iE '^(numpy|onnxruntime|soundfile|soxr) ' | tr -s ' ' | paste -sd, -)"
echo "== aarch64: edge-ser info"; in_chroot "$IN/venv/bin/edge-ser" info "$IN/bundle"
echo "== aarch64: predicting $NCLIPS clips with variant $VARIANT (emulated: slow, timings meaningless)"
echo "   (onnxruntime's 'Error in cpuinfo' lines are expected: no /sys in the chroot; see the mounts above)"
in_chroot "$IN/venv/bin/python" "$IN/predict.py" "$IN/bundle" "$VARIANT" "$IN/clips" "$IN/arm64.jsonl"
echo "== x86 host: same snippet"
env -u QEMU_CPU "$HOSTPY" "$ROOT$IN/predict.py" "$ROOT$IN/bundle" "$VARIANT" "$ROOT$IN/clips" "$WORK/x86.jsonl"
cp "$ROOT$IN/arm64.jsonl" "$WORK/arm64.jsonl"

# 5. Compare and write WORKDIR/arm64_check.json.
"$HOSTPY" - "$WORK" "$VARIANT" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
work, variant, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3])
def read(name):
    rows = [json.loads(line) for line in open(f"{work}/{name}.jsonl")]
    return rows[:-1], rows[-1]["facts"]
arm, arm_facts = read("arm64"); x86, x86_facts = read("x86")
assert [r["file"] for r in arm] == [r["file"] for r in x86], "clip lists differ"
same = all(a["label"] == b["label"] for a, b in zip(arm, x86))
dp = max(abs(a["probs"][k] - b["probs"][k]) for a, b in zip(arm, x86) for k in a["probs"])
ok = same and dp < 0.02 and arm_facts["target"].startswith("arm64") and not arm_facts["torch_imported"]
result = {"ok": ok, "clips": len(arm), "same_labels": same, "max_abs_dp": dp, "variant": variant,
          "arm64_target": arm_facts["target"], "arm64": arm_facts, "x86": x86_facts, "elapsed_s": elapsed,
          "note": "arm64 side ran under QEMU user emulation; elapsed_s is the whole check, NOT Raspberry Pi speed"}
json.dump(result, open(f"{work}/arm64_check.json", "w"), indent=2)
print(f"== {len(arm)} clips, variant {variant}: same labels {same}, max |dp| {dp:.2e}, "
      f"arm64 target {arm_facts['target']}, python {arm_facts['python']} / onnxruntime {arm_facts['onnxruntime']} "
      f"(x86: {x86_facts['python']} / {x86_facts['onnxruntime']}) -> {'PASS' if ok else 'FAIL'}")
print("== NOTE: emulated timings are meaningless; nothing here is Raspberry Pi speed.")
print(f"== wrote {work}/arm64_check.json (whole check: {elapsed} s)")
sys.exit(0 if ok else 1)
EOF
