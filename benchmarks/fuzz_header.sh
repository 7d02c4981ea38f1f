#!/usr/bin/env bash
# Long fuzz run of the header validator under AddressSanitizer + UBSan.
#   benchmarks/fuzz_header.sh [EXECUTIONS=2000000] [SEED=1]
# With clang installed, a libFuzzer build is also possible:
#   CXX=clang++ cmake -S . -B build-fuzz -DPYBRIDGE_TESTS=ON -DPYBRIDGE_LIBFUZZER=ON -DPYBRIDGE_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/fuzz-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYBRIDGE_TESTS=ON -DPYBRIDGE_EXAMPLES=OFF \
      -DPYBRIDGE_SANITIZE=address,undefined > /dev/null
cmake --build "$build" --parallel 2 --target fuzz_header > /dev/null
"$build/cpp/tests/fuzz_header" "${1:-2000000}" "${2:-1}"
