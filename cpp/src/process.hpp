// Liveness of a peer process, shared by the shim and the Python module.
#pragma once

#include <sys/types.h>

namespace pybridge::detail {

// True while `pid` runs. A zombie (exited, not yet reaped by its parent)
// counts as dead: its channel will never be served again.
bool process_alive(pid_t pid) noexcept;

}  // namespace pybridge::detail
