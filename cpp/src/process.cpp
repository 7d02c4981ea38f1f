#include "process.hpp"

#include <sched.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

namespace pybridge::detail {

bool process_alive(pid_t pid) noexcept {
    if (pid <= 0) return false;
    // EPERM means the process exists but belongs to someone else: alive.
    if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
    // kill() succeeds on zombies; /proc tells them apart (Linux). Where /proc
    // is missing we cannot tell, and report alive.
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    std::FILE *file = std::fopen(path, "r");
    if (file == nullptr) return errno != ENOENT;
    char buffer[512];
    const size_t length = std::fread(buffer, 1, sizeof buffer - 1, file);
    std::fclose(file);
    buffer[length] = '\0';
    // The command name in parentheses may itself hold ')' or spaces: the
    // state is the first field after the last ')'.
    const char *close = std::strrchr(buffer, ')');
    if (close == nullptr || close[1] == '\0' || close[2] == '\0') return true;
    const char state = close[2];
    return state != 'Z' && state != 'X';
}

bool confined_to_one_cpu_with(pid_t pid) noexcept {
#if defined(__linux__)
    if (pid <= 0) return false;
    cpu_set_t ours, theirs;
    if (::sched_getaffinity(0, sizeof ours, &ours) != 0 || ::sched_getaffinity(pid, sizeof theirs, &theirs) != 0) {
        return false;
    }
    return CPU_COUNT(&ours) == 1 && CPU_EQUAL(&ours, &theirs);
#else
    (void)pid;
    return false;
#endif
}

}  // namespace pybridge::detail
