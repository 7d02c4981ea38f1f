// What the OS says about a peer process, shared by the shim and the Python module.
#pragma once

#include <sys/types.h>

namespace pybridge::detail {

// True while `pid` runs. A zombie (exited, not yet reaped by its parent)
// counts as dead: its channel will never be served again.
bool process_alive(pid_t pid) noexcept;

// True when the calling thread and process `pid` may both run on one and the same CPU only (their
// affinity masks: taskset -c 0, mpirun --bind-to core, a cpuset of one). A waiter there that spins
// holds the very core its peer needs to answer. False where it cannot tell (no such process, not
// Linux, more CPUs than a cpu_set_t holds).
bool confined_to_one_cpu_with(pid_t pid) noexcept;

}  // namespace pybridge::detail
