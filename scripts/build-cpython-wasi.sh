#!/usr/bin/env bash
# Builds CPython for wasm32-wasi (WASI preview 1) from pinned, digest-checked sources: a static, non-PIC core module
# (`python.wasm`, no component wrapper) plus the pure-Python standard library it reads at start-up.
#
#   WASI_LIBC_GIT=/path/to/wasi-libc/.git scripts/build-cpython-wasi.sh
#
# Output (never committed; `cargo xtask guests` builds the Python engine from it): target/cpython-wasi/dist/
#   python.wasm          the interpreter as CPython links it (a WASI command), debug info stripped
#   link/, include/,     the link kit: the interpreter's static archives, its headers and the wasi-libc sysroot,
#   sysroot/             which `cargo xtask guests` links with guests/python/bridge.c into the engine
#   lib/python3.13/      the standard library (no tests, no Tk/IDLE/ensurepip) with its bytecode, plus the WASI
#                        sysconfig data
#   provenance.json      input and output digests, toolchain versions, configure arguments
#
# Inputs, pinned here and checked before use:
#   - CPython 3.13.5: upstream's release tarball as Debian 13 (trixie) ships it (`python3.13_3.13.5.orig.tar.xz`),
#     fetched with `apt-get source` from a private sources list (the system's apt configuration is not changed);
#     apt checks it against the signed Sources index, and this script checks its SHA-256 again. (CPython 3.14's
#     sources are listed in Debian testing/unstable, but only stable releases' source files are reachable here;
#     PEP 816 ties both 3.13 and 3.14 to WASI SDK 24, so the recipe is the same — bump the four PY_* lines.)
#   - wasi-libc at tag wasi-sdk-24 (commit below), read from a git directory given in WASI_LIBC_GIT (a clone or
#     mirror of the public wasi-libc repository); the tag must resolve to the pinned commit.
#   - zlib 1.3.1: Debian 13's source package (same route and checks as CPython's), compiled into the sysroot so that
#     CPython's `zlib` module (and with it `gzip` and compressed `zipfile` members) is built in.
#   - Debian 12 packages clang-19, lld-19 (wasm-ld), llvm-19 (llvm-ar, llvm-ranlib) and libclang-rt-19-dev-wasm32
#     (compiler-rt builtins for wasm32) for wasi-libc and zlib, and the same packages at version 22 for CPython
#     (llvm-22 also gives llvm-strip and llvm-profdata), installed by this script if missing.
#   - The profile-guided optimisation profile, guests/python/cpython.profdata (committed). PGO_TRAIN=1 makes it
#     again first: an instrumented interpreter (clang-22 -fprofile-generate, linked with LLVM's profile runtime from
#     crates.io's minicov 0.3.8 crate, digest-checked, and scripts/cpython-pgo/profile-dump.c) runs CPython's own
#     PGO task (regrtest's --pgo tests) in Node's node:wasi (scripts/cpython-pgo/run-wasi.mjs); llvm-profdata
#     merges the counts. Training runs are not bit-for-bit repeatable, so the profile is an input like the sources.
#
# Steps: build wasi-libc's sysroot; build a native CPython of the same version (`--with-build-python` needs one to
# freeze modules); configure CPython with Tools/wasm/config.site-wasm32-wasi exactly as Tools/wasm/wasi.py does
# (host wasm32-unknown-wasi, static, no shared libpython, no -fPIC) plus pymalloc, full LTO and the PGO profile
# (-fprofile-use); make; strip; stage
# the stdlib; write digests.
# Long compiles run under `nice -n 10` with JOBS (default 2) make jobs. Intermediate build trees are removed at the
# end unless KEEP_BUILD=1. Rerunning starts from scratch.
set -euo pipefail
# One compound command, read whole before it runs: editing this file during a build cannot change the build.
{

PY_VERSION=3.13.5
PY_DEBIAN_PACKAGE=python3.13
PY_ORIG=python3.13_3.13.5.orig.tar.xz
PY_ORIG_SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
ZLIB_DEBIAN_VERSION=1:1.3.dfsg+really1.3.1-1
ZLIB_ORIG=zlib_1.3.dfsg+really1.3.1.orig.tar.gz
ZLIB_ORIG_SHA256=60dd315c07f616887caa029408308a018ace66e3d142726a97db164b3b8f69fb
WASI_LIBC_TAG=wasi-sdk-24
WASI_LIBC_COMMIT=b9ef79d7dbd47c6c5bafdae760823467c2f60b70
DEBIAN_SOURCES_SUITE=trixie
LLVM=19
# CPython and the embedding are compiled with clang-22: LLVM 20+ can instrument wasm32 for profile-guided
# optimisation (section-based counters). wasi-libc and zlib stay on clang-19 (its bitcode links into clang-22's LTO).
PY_LLVM=22
PY_TARGET="--target=wasm32-wasi -Wno-deprecated"
# PGO: the profile, committed (so a rebuild gives the same bytes); PGO_TRAIN=1 trains and rewrites it, with LLVM's
# profile runtime as crates.io's minicov packages it (compiler-rt's profile runtime without file I/O, Apache-2.0/MIT).
PGO_PROFILE_REL=guests/python/cpython.profdata
MINICOV_VERSION=0.3.8
MINICOV_SHA256=4869b6a491569605d66d3952bcdf03df789e5b536e5f0cf7758a7f08a55ae24d

ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${CPYTHON_WASI_DIR:-$ROOT/target/cpython-wasi}
PGO_PROFILE="$ROOT/$PGO_PROFILE_REL"
JOBS=${JOBS:-2}
NICE=(nice -n ${NICE_LEVEL:-10})
: "${WASI_LIBC_GIT:?set WASI_LIBC_GIT to a git directory of the wasi-libc repository that has tag $WASI_LIBC_TAG}"

say() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

say "toolchain (Debian packages)"
need=()
for pkg in clang-$LLVM lld-$LLVM llvm-$LLVM libclang-rt-$LLVM-dev-wasm32 clang-$PY_LLVM lld-$PY_LLVM llvm-$PY_LLVM \
    libclang-rt-$PY_LLVM-dev-wasm32; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
CLANG=clang-$LLVM
LLVM_BIN=/usr/lib/llvm-$LLVM/bin
PY_CLANG=clang-$PY_LLVM
PY_LLVM_BIN=/usr/lib/llvm-$PY_LLVM/bin
test -x "$LLVM_BIN/wasm-ld" || { echo "wasm-ld missing from $LLVM_BIN (lld-$LLVM)" >&2; exit 1; }
test -f "$("$CLANG" --target=wasm32-wasi --print-libgcc-file-name)" || {
    echo "compiler-rt builtins for wasm32 missing (libclang-rt-$LLVM-dev-wasm32)" >&2
    exit 1
}

rm -rf "$W"
mkdir -p "$W/src" "$W/dist"

say "CPython $PY_VERSION source ($PY_ORIG, Debian $DEBIAN_SOURCES_SUITE)"
apt_dir="$W/apt"
mkdir -p "$apt_dir/lists/partial"
echo "deb-src http://deb.debian.org/debian $DEBIAN_SOURCES_SUITE main" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists")
apt-get "${apt_opts[@]}" update -qq
(cd "$W/src" && apt-get "${apt_opts[@]}" source --download-only -qq "$PY_DEBIAN_PACKAGE")
echo "$PY_ORIG_SHA256  $W/src/$PY_ORIG" | sha256sum -c -
tar -xf "$W/src/$PY_ORIG" -C "$W/src"
SRC="$W/src/Python-$PY_VERSION"
test -f "$SRC/Tools/wasm/config.site-wasm32-wasi"
# One change to the sources: the eval loop is never inlined. Under the profile, clang inlines the whole
# _PyEval_EvalFrameDefault into _PyEval_Vector: a second copy of the interpreter loop (373 KB of the engine's 6.1 MB
# of code; 1.0 s of the 8.2 s wasmtime's Cranelift spent compiling its functions), to save one call per call from C
# into Python.
sed -i 's/^_PyEval_EvalFrameDefault(PyThreadState \*tstate, _PyInterpreterFrame \*frame, int throwflag)$/Py_NO_INLINE &/' \
    "$SRC/Python/ceval.c"
test "$(grep -c '^Py_NO_INLINE _PyEval_EvalFrameDefault(' "$SRC/Python/ceval.c")" = 1

say "wasi-libc $WASI_LIBC_TAG"
got=$(git --git-dir="$WASI_LIBC_GIT" rev-parse "$WASI_LIBC_TAG^{commit}")
if [[ "$got" != "$WASI_LIBC_COMMIT" ]]; then
    echo "wasi-libc tag $WASI_LIBC_TAG is $got in $WASI_LIBC_GIT, pinned $WASI_LIBC_COMMIT: refusing" >&2
    exit 1
fi
mkdir -p "$W/wasi-libc"
git --git-dir="$WASI_LIBC_GIT" archive "$WASI_LIBC_COMMIT" | tar -x -C "$W/wasi-libc"
"${NICE[@]}" make -C "$W/wasi-libc" -j"$JOBS" CC="$CLANG" AR="$LLVM_BIN/llvm-ar" NM="$LLVM_BIN/llvm-nm" \
    THREAD_MODEL=single >"$W/wasi-libc.log" 2>&1 || { tail -20 "$W/wasi-libc.log"; exit 1; }
SYSROOT="$W/wasi-libc/sysroot"

say "zlib (for the zlib, gzip and zipfile modules: Debian $DEBIAN_SOURCES_SUITE source package zlib)"
(cd "$W/src" && apt-get "${apt_opts[@]}" source --download-only -qq "zlib=$ZLIB_DEBIAN_VERSION")
echo "$ZLIB_ORIG_SHA256  $W/src/$ZLIB_ORIG" | sha256sum -c -
tar -xzf "$W/src/$ZLIB_ORIG" -C "$W/src"
ZSRC="$W/src/zlib-1.3.1"
mkdir -p "$W/zlib"
# zlib's own configure probes the build machine; its library is these files, compiled as CPython is (LTO bitcode).
for c in adler32 crc32 deflate infback inffast inflate inftrees trees zutil compress uncompr gzclose gzlib gzread \
    gzwrite; do
    "${NICE[@]}" "$CLANG" --target=wasm32-wasi --sysroot="$SYSROOT" -O3 -flto=full -D_LARGEFILE64_SOURCE=1 \
        -DHAVE_HIDDEN -c "$ZSRC/$c.c" -o "$W/zlib/$c.o"
done
"$LLVM_BIN/llvm-ar" rcs "$SYSROOT/lib/wasm32-wasi/libz.a" "$W"/zlib/*.o
cp "$ZSRC/zlib.h" "$ZSRC/zconf.h" "$SYSROOT/include/wasm32-wasi/"

say "native build Python (for freezing modules)"
mkdir -p "$W/build-native"
(cd "$W/build-native" &&
    "${NICE[@]}" "$SRC/configure" -q --disable-test-modules CFLAGS="-O1 -g0" >"$W/native.log" 2>&1 &&
    "${NICE[@]}" make -j"$JOBS" python sharedmods >>"$W/native.log" 2>&1) || { tail -20 "$W/native.log"; exit 1; }
BUILD_PYTHON="$W/build-native/python"
"$BUILD_PYTHON" -c "import sys; assert sys.version.startswith('$PY_VERSION'), sys.version"

# Configures and makes CPython for wasm32-wasi in build directory $1 with extra compiler and linker flags $2.
# The configure path must be relative (Tools/wasm/wasi.py says so: the interpreter finds a checkout's stdlib by it).
configure_args=(--host=wasm32-unknown-wasi --build="$("$SRC/config.guess")" --with-build-python="$BUILD_PYTHON"
    --disable-test-modules)
# pymalloc (which CPython's configure turns off for WASI unless asked) and full LTO: together 1.13x -> 0.97x of the
# componentize-py engine's time on the CPU-bound script (README, "Python engine v2"). PLAIN=1 builds without them
# (and without the profile).
if [[ "${PLAIN:-0}" != 1 ]]; then
    configure_args+=(--with-pymalloc --with-lto=full)
fi
build_cpython() {
    local dir=$1 flags=$2
    mkdir -p "$dir"
    (cd "$dir" &&
        CONFIG_SITE="$SRC/Tools/wasm/config.site-wasm32-wasi" \
        CC="$PY_CLANG $PY_TARGET --sysroot=$SYSROOT" CPP="$PY_CLANG $PY_TARGET --sysroot=$SYSROOT -E" \
        CFLAGS="$flags" LDFLAGS="$flags" \
        AR="$PY_LLVM_BIN/llvm-ar" RANLIB="$PY_LLVM_BIN/llvm-ranlib" \
        PKG_CONFIG_PATH="" PKG_CONFIG_LIBDIR="$SYSROOT/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$SYSROOT" \
        PATH="$PY_LLVM_BIN:$PATH" \
        "${NICE[@]}" "$(realpath --relative-to="$dir" "$SRC/configure")" "${configure_args[@]}" \
        >"$dir/configure.log" 2>&1) || { tail -30 "$dir/configure.log"; exit 1; }
    (cd "$dir" && PATH="$PY_LLVM_BIN:$PATH" "${NICE[@]}" make -j"$JOBS" all >"$dir/make.log" 2>&1) ||
        { tail -30 "$dir/make.log"; exit 1; }
}

# PGO_TRAIN=1: builds an instrumented interpreter, runs the training and writes the profile.
train_profile() {
    say "PGO: LLVM's profile runtime for wasm32 (crates.io minicov $MINICOV_VERSION) and the training interpreter"
    command -v node >/dev/null || { echo "PGO_TRAIN=1 needs Node.js (node:wasi runs the training)" >&2; exit 1; }
    curl -sSfL -o "$W/src/minicov.crate" "https://static.crates.io/crates/minicov/minicov-$MINICOV_VERSION.crate"
    echo "$MINICOV_SHA256  $W/src/minicov.crate" | sha256sum -c -
    tar -xzf "$W/src/minicov.crate" -C "$W/src"
    MSRC="$W/src/minicov-$MINICOV_VERSION/c"
    mkdir -p "$W/pgo-runtime"
    rt_flags=($PY_TARGET -O2 -fno-profile-generate -DCOMPILER_RT_HAS_ATOMICS=1 -DCOMPILER_RT_PROFILE_BAREMETAL=1
        -I"$MSRC")
    for c in InstrProfiling InstrProfilingBuffer InstrProfilingInternal InstrProfilingMerge \
        InstrProfilingPlatformLinux InstrProfilingPlatformWindows InstrProfilingWriter InstrProfilingValue \
        InstrProfilingVersionVar; do
        "$PY_CLANG" "${rt_flags[@]}" -nostdlibinc -c "$MSRC/$c.c" -o "$W/pgo-runtime/$c.o"
    done
    "$PY_CLANG" "${rt_flags[@]}" --sysroot="$SYSROOT" -c "$ROOT/scripts/cpython-pgo/profile-dump.c" \
        -o "$W/pgo-runtime/profile-dump.o"
    # clang links the profile runtime from its resource directory, which has none for wasm32: a private copy of
    # that directory (links to Debian's files) adds this one, so the system's toolchain is not changed.
    RESOURCE="$W/pgo-runtime/resource"
    system_resource=$("$PY_CLANG" -print-resource-dir)
    mkdir -p "$RESOURCE/lib/wasm32-unknown-wasi"
    for entry in "$system_resource"/*; do [[ $entry == */lib ]] || ln -s "$entry" "$RESOURCE/"; done
    for entry in "$system_resource"/lib/*; do
        [[ -e "$RESOURCE/lib/${entry##*/}" ]] || ln -s "$entry" "$RESOURCE/lib/"
    done
    "$PY_LLVM_BIN/llvm-ar" rcs "$RESOURCE/lib/wasm32-unknown-wasi/libclang_rt.profile.a" "$W"/pgo-runtime/*.o
    build_cpython "$W/build-train" "-resource-dir=$RESOURCE -fprofile-generate"

    say "PGO: training run (CPython's own PGO task, regrtest --pgo's tests, in node:wasi)"
    # regrtest's PGO list (Lib/test/libregrtest/pgo.py) but test_datetime and test_time, which wait forever
    # under node:wasi's clocks; regrtest itself picks nothing else here (no subprocesses, no network on WASI).
    tests=$("$BUILD_PYTHON" -c "import re, sys; print(' '.join(t for t in re.findall(r\"'(test_\\w+)'\", \
        open(sys.argv[1]).read()) if t not in ('test_datetime', 'test_time')))" "$SRC/Lib/test/libregrtest/pgo.py")
    mkdir -p "$W/pgo-profile"
    # Deep recursion tests need a large native stack in V8; node can crash after the module exits, so the
    # outcome is judged by regrtest's result line and the profile, not node's exit status.
    (ulimit -s 262144
        WASI_PREOPENS="{\"/\": \"$W\", \"/profile\": \"$W/pgo-profile\"}" \
        WASI_ENV="{\"PYTHONPATH\": \"/build-train/build/lib.wasi-wasm32-${PY_VERSION%.*}\", \"PYTHONHASHSEED\": \"0\", \"LLVM_PROFILE_FILE\": \"/profile/python.profraw\"}" \
        "${NICE[@]}" node --no-warnings --stack-size=60000 "$ROOT/scripts/cpython-pgo/run-wasi.mjs" \
        "$W/build-train/python.wasm" /build-train/python.wasm -m test $tests >"$W/pgo-training.log" 2>&1) || true
    grep -q "^Result: SUCCESS" "$W/pgo-training.log" || { tail -30 "$W/pgo-training.log"; exit 1; }
    grep -E "^Total (duration|tests)" "$W/pgo-training.log"
    "$PY_LLVM_BIN/llvm-profdata" merge -o "$PGO_PROFILE" "$W/pgo-profile/python.profraw"
    echo "wrote $PGO_PROFILE ($(stat -c %s "$PGO_PROFILE") bytes): commit it with the engine"
}

pgo_flags=""
if [[ "${PLAIN:-0}" != 1 ]]; then
    if [[ "${PGO_TRAIN:-0}" == 1 ]]; then
        train_profile
    fi
    test -f "$PGO_PROFILE" || { echo "$PGO_PROFILE is missing: PGO_TRAIN=1 makes it" >&2; exit 1; }
    pgo_flags="-fprofile-use=$PGO_PROFILE -Wno-profile-instr-unprofiled -Wno-profile-instr-out-of-date"
fi

say "configure and make (wasm32-wasi, $JOBS jobs${pgo_flags:+, with the PGO profile})"
build_cpython "$W/build-wasi" "$pgo_flags"

say "stage dist/"
"$PY_LLVM_BIN/llvm-strip" --strip-debug -o "$W/dist/python.wasm" "$W/build-wasi/python.wasm"
# The link kit `cargo xtask guests` links the embedding (guests/python/bridge.c) with: the interpreter's static
# archives (LLVM bitcode under LTO), its headers, and the wasi-libc sysroot they were compiled against.
B="$W/build-wasi"
mkdir -p "$W/dist/link" "$W/dist/include/python${PY_VERSION%.*}"
cp "$B/libpython${PY_VERSION%.*}.a" "$B/Modules/_decimal/libmpdec/libmpdec.a" "$B/Modules/_hacl/libHacl_Hash_SHA2.a" \
    "$B/Modules/expat/libexpat.a" "$W/dist/link/"
cp -r "$SRC/Include/." "$W/dist/include/python${PY_VERSION%.*}/"
cp "$B/pyconfig.h" "$W/dist/include/python${PY_VERSION%.*}/"
cp -r "$SYSROOT" "$W/dist/sysroot"
echo "$(grep '^CONFIGURE_LDFLAGS_NODIST=' "$B/Makefile" | cut -d= -f2-)" >"$W/dist/link/ldflags"
echo "$(grep '^LIBS=' "$B/Makefile" | cut -d= -f2-)" >"$W/dist/link/libs"
LIB="$W/dist/lib/python${PY_VERSION%.*}"
mkdir -p "$LIB"
(cd "$SRC/Lib" && tar -c --exclude=__pycache__ --exclude=./test --exclude=./idlelib --exclude=./tkinter \
    --exclude=./turtledemo --exclude=./ensurepip --exclude='./*/tests' . | tar -x -C "$LIB")
cp "$W"/build-wasi/build/lib.wasi-wasm32-*/_sysconfigdata_*.py "$LIB/"
# Bytecode compiled ahead (same interpreter version, so the same magic number): a read-only stdlib mount would
# otherwise be recompiled at every import. Hash-based and unchecked, so the files do not depend on timestamps.
"${NICE[@]}" "$BUILD_PYTHON" -m compileall -q --invalidation-mode unchecked-hash "$LIB" >/dev/null

wasm_sha=$(sha256sum "$W/dist/python.wasm" | cut -d' ' -f1)
lib_sha=$(cd "$W/dist/lib" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
"$BUILD_PYTHON" - "$W/dist/provenance.json" <<EOF
import json, sys
json.dump({
    "cpython": {"version": "$PY_VERSION", "source": "Debian $DEBIAN_SOURCES_SUITE source package $PY_DEBIAN_PACKAGE",
                "file": "$PY_ORIG", "sha256": "$PY_ORIG_SHA256"},
    "wasi_libc": {"tag": "$WASI_LIBC_TAG", "commit": "$WASI_LIBC_COMMIT"},
    "zlib": {"source": "Debian $DEBIAN_SOURCES_SUITE source package zlib $ZLIB_DEBIAN_VERSION",
             "file": "$ZLIB_ORIG", "sha256": "$ZLIB_ORIG_SHA256"},
    "toolchain": """$("$PY_CLANG" --version | head -1) (CPython); $("$CLANG" --version | head -1) (wasi-libc, zlib)""",
    "configure": "${configure_args[*]}".replace("$W", "target/cpython-wasi"),
    "config_site": "Tools/wasm/config.site-wasm32-wasi",
    "python_wasm": {"bytes": $(stat -c %s "$W/dist/python.wasm"), "sha256": "$wasm_sha"},
    "link_kit_sha256": "$(cd "$W/dist" && find link include sysroot -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)",
    "optimisations": "$([[ "${PLAIN:-0}" != 1 ]] && echo "pymalloc, full LTO, PGO" || echo "none (PLAIN=1)")",
    "pgo_profile": $([[ "${PLAIN:-0}" != 1 ]] && echo "{\"file\": \"$PGO_PROFILE_REL\", \"sha256\": \"$(sha256sum "$PGO_PROFILE" | cut -d' ' -f1)\", \"training\": \"PGO_TRAIN=1: CPython's regrtest PGO tests but test_datetime and test_time, in node:wasi\"}" || echo null),
    "stdlib": {"files": $(find "$W/dist/lib" -type f | wc -l),
               "sha256_of_sorted_file_digests": "$lib_sha"},
}, open(sys.argv[1], "w"), indent=2)
EOF
cat "$W/dist/provenance.json"

if [[ "${KEEP_BUILD:-0}" != 1 ]]; then
    say "removing intermediate build trees (KEEP_BUILD=1 keeps them)"
    rm -rf "$W/build-native" "$W/build-wasi" "$W/build-train" "$W/pgo-runtime" "$W/wasi-libc/build" \
        "$W/src/Python-$PY_VERSION" "$W/src/zlib-1.3.1" "$W/src/minicov-$MINICOV_VERSION" \
        "$W/zlib" "$W/apt"
fi
say "done: $W/dist/python.wasm"
exit
}
