// Tests of the shim through its C and C++ APIs. A minimal driver written
// here (the real one is Python) plays the other end from the main thread
// while the simulator loop runs in a second thread: sanitizers, TSan above
// all, then see both ends of every exchange.

#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "pybridge/driver.h"
#include "pybridge/pybridge.hpp"

namespace {

using pybridge_tests::failures;

template <typename T>
T load(const T &field) {
    return __atomic_load_n(&field, __ATOMIC_ACQUIRE);
}
template <typename T>
void store(T &field, T value) {
    __atomic_store_n(&field, value, __ATOMIC_RELEASE);
}

// The driver's end, through the shim's own driver API (pybridge/driver.h),
// exactly as pybridge.Simulator drives it: the tests see both ends of the
// protocol in one process.
class TestDriver {
public:
    // doorbell: a reply semaphore shared with other channels; nullptr = this channel's own.
    explicit TestDriver(const char *doorbell = nullptr) {
        if (pybridge_driver_create(nullptr, doorbell, &d_) != PYBRIDGE_OK) {
            std::fprintf(stderr, "pybridge_driver_create: %s\n", pybridge_driver_last_error(d_));
            ++failures;
        }
    }
    ~TestDriver() { pybridge_driver_destroy(d_); }
    TestDriver(const TestDriver &) = delete;
    TestDriver &operator=(const TestDriver &) = delete;

    std::string name() const { return pybridge_driver_name(d_); }
    pybridge_driver *get() const { return d_; }
    bool exists() const {
        const int fd = ::shm_open(("/" + name()).c_str(), O_RDWR, 0);
        if (fd >= 0) ::close(fd);
        return fd >= 0;
    }

    // Waits (up to 5 s) for the declaration.
    bool wait_declared(pybridge_declaration *declaration = nullptr, int32_t *simulator_pid = nullptr) {
        pybridge_declaration d{};
        int32_t pid = 0;
        for (int i = 0; i < 50; ++i) {
            const int rc = pybridge_driver_wait_declaration(d_, 100000000, &d, &pid);
            if (rc == PYBRIDGE_TIMEOUT) continue;
            if (declaration) *declaration = d;
            if (simulator_pid) *simulator_pid = pid;
            return rc == PYBRIDGE_OK;
        }
        return false;
    }
    void accept(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities, uint32_t spin_us = 0,
                uint32_t max_batch = 1) {
        CHECK(pybridge_driver_accept(d_, n_params, n_residuals, capabilities, max_batch, spin_us) == PYBRIDGE_OK);
    }
    void reject(const char *reason) { CHECK(pybridge_driver_reject(d_, reason) == PYBRIDGE_OK); }
    void shut_down() { CHECK(pybridge_driver_shutdown(d_) == PYBRIDGE_OK); }

    // Sends a request without waiting for its reply.
    uint64_t send(uint32_t kind, const std::vector<double> &params) {
        CHECK(pybridge_driver_send(d_, kind, params.data()) == PYBRIDGE_OK);
        return pybridge_driver_seq(d_);
    }
    // One request; false if no reply came within 5 s.
    bool request(uint32_t kind, const std::vector<double> &params) {
        send(kind, params);
        for (int i = 0; i < 50; ++i) {
            const int rc = pybridge_driver_wait(d_, 100000000);
            if (rc != PYBRIDGE_TIMEOUT) return rc == PYBRIDGE_OK;
        }
        return false;
    }
    pybridge_reply reply() const {
        pybridge_reply r{};
        CHECK(pybridge_driver_reply(d_, &r) == PYBRIDGE_OK);
        return r;
    }

private:
    pybridge_driver *d_ = nullptr;
};

// A doorbell's name for one test, and the semaphore removed at its end (the
// drivers never remove a shared doorbell; declare it before them).
class TestDoorbell {
public:
    TestDoorbell() {
        std::random_device random;
        std::snprintf(name_, sizeof name_, "pybridge-cpptest-bell-%08x", random());
    }
    ~TestDoorbell() { ::sem_unlink(("/" + std::string(name_)).c_str()); }
    TestDoorbell(const TestDoorbell &) = delete;
    TestDoorbell &operator=(const TestDoorbell &) = delete;
    const char *name() const { return name_; }

private:
    char name_[64];
};

// The raw header of a channel, mapped separately: for tests that play a
// broken or dead driver by writing fields no real driver would.
class RawHeader {
public:
    explicit RawHeader(const std::string &name) {
        const int fd = ::shm_open(("/" + name).c_str(), O_RDWR, 0);
        header_ = static_cast<pybridge_header *>(
            ::mmap(nullptr, sizeof(pybridge_header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        ::close(fd);
    }
    ~RawHeader() { ::munmap(header_, sizeof(pybridge_header)); }
    pybridge_header *operator->() const { return header_; }

private:
    pybridge_header *header_;
};

double rosenbrock(const double *x, uint32_t n, double *gradient) {
    double cost = 0.0;
    if (gradient) std::fill(gradient, gradient + n, 0.0);
    for (uint32_t i = 0; i + 1 < n; ++i) {
        const double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        cost += 100.0 * a * a + b * b;
        if (gradient) {
            gradient[i] += -400.0 * a * x[i] - 2.0 * b;
            gradient[i + 1] += 200.0 * a;
        }
    }
    return cost;
}

// A name the C driver makes records its maker and 96 random bits ("pybridge-" pid "-" 24 hex), as
// Python's do (the same function): who made a /dev/shm entry can be told without opening it.
void test_a_fresh_name_records_its_maker() {
    TestDriver first, second;
    const std::string prefix = PYBRIDGE_NAME_PREFIX + std::to_string(::getpid()) + "-";
    for (const std::string &name : {first.name(), second.name()}) {
        CHECK(name.compare(0, prefix.size(), prefix) == 0);
        const std::string token = name.substr(prefix.size());
        CHECK(token.size() == 24 && token.find_first_not_of("0123456789abcdef") == std::string::npos);
    }
    CHECK(first.name() != second.name());
}

void test_c_api_round_trips(uint32_t spin_us) {
    TestDriver driver;
    int loop_status = 999;
    std::thread simulator([&] {
        const pybridge_declaration declaration{0, 0, PYBRIDGE_CAP_GRADIENT};
        pybridge_channel *channel = nullptr;
        int rc = pybridge_channel_open(driver.name().c_str(), &declaration, &channel);
        pybridge_request request;
        while (rc == PYBRIDGE_OK && (rc = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
            rc = pybridge_channel_reply(channel, rosenbrock(request.params, request.n_params, request.gradient));
        }
        loop_status = rc;
        pybridge_channel_close(channel);
    });
    pybridge_declaration declared{};
    int32_t simulator_pid = 0;
    CHECK(driver.wait_declared(&declared, &simulator_pid));
    CHECK(declared.capabilities == PYBRIDGE_CAP_GRADIENT);
    CHECK(simulator_pid == ::getpid());
    driver.accept(5, 0, PYBRIDGE_CAP_GRADIENT, spin_us);
    std::mt19937_64 random(42);
    std::uniform_real_distribution<double> uniform(-2.0, 2.0);
    for (int i = 0; i < 20000; ++i) {
        std::vector<double> x(5);
        for (double &v : x) v = uniform(random);
        const bool gradient = i % 2 == 0;
        CHECK(driver.request(gradient ? PYBRIDGE_REQUEST_GRADIENT : PYBRIDGE_REQUEST_COST, x));
        double expected_gradient[5];
        const double expected = rosenbrock(x.data(), 5, expected_gradient);
        const pybridge_reply reply = driver.reply();
        CHECK(reply.status == PYBRIDGE_REPLY_OK);
        CHECK(reply.cost == expected);
        CHECK((reply.gradient != nullptr) == gradient);
        if (gradient) CHECK(std::memcmp(reply.gradient, expected_gradient, sizeof expected_gradient) == 0);
        if (failures) break;
    }
    driver.shut_down();
    simulator.join();
    CHECK(loop_status == PYBRIDGE_CLOSED);
}

// One driver thread waits on two channels at once: both name the same reply
// semaphore (a "doorbell"), and pybridge_driver_wait_any blocks on it until
// a reply is in. Pools build on this.
void test_one_thread_waits_on_two_channels_through_a_shared_doorbell() {
    const TestDoorbell bell;  // declared first: removed after the channels
    TestDriver first(bell.name()), second(bell.name());
    TestDriver *drivers[2] = {&first, &second};
    pybridge_driver *handles[2] = {first.get(), second.get()};
    std::vector<std::thread> simulators;
    for (TestDriver *driver : drivers) {
        simulators.emplace_back([name = driver->name()] {
            pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
            while (auto request = channel.wait()) channel.reply(request->params()[0] * 10.0);
        });
    }
    for (TestDriver *driver : drivers) {
        CHECK(driver->wait_declared());
        driver->accept(1, 0, 0);
    }
    for (int round = 1; round <= 200; ++round) {
        first.send(PYBRIDGE_REQUEST_COST, {double(round)});
        second.send(PYBRIDGE_REQUEST_COST, {double(-round)});
        bool seen[2] = {false, false};
        for (int waits = 0; !(seen[0] && seen[1]) && waits < 50;) {
            size_t ready = 99;
            const int rc = pybridge_driver_wait_any(handles, 2, 100000000, &ready);
            if (rc == PYBRIDGE_TIMEOUT) {
                ++waits;
                continue;
            }
            CHECK(rc == PYBRIDGE_OK && ready < 2);
            if (rc != PYBRIDGE_OK || ready >= 2) break;
            const double expected = (ready == 0 ? 10.0 : -10.0) * round;
            CHECK(drivers[ready]->reply().cost == expected);
            seen[ready] = true;
            // Taken: wait for the other one only (an answered channel counts as ready at once).
            if (!(seen[0] && seen[1])) {
                const size_t other = 1 - ready;
                pybridge_driver *rest[1] = {handles[other]};
                size_t index = 0;
                while (pybridge_driver_wait_any(rest, 1, 100000000, &index) == PYBRIDGE_TIMEOUT && waits < 50) ++waits;
                CHECK(drivers[other]->reply().cost == (other == 0 ? 10.0 : -10.0) * round);
                seen[other] = true;
            }
        }
        CHECK(seen[0] && seen[1]);
        if (failures) break;
    }
    for (TestDriver *driver : drivers) driver->shut_down();
    for (std::thread &simulator : simulators) simulator.join();
}

// Channels of a pool share a doorbell, yet a thread may also wait on one of
// them alone (each pool thread bound to its simulator). Its simulator must
// post that channel's own semaphore: a reply of another channel must neither
// wake it nor be swallowed by it. Here the second thread's reply comes first;
// with one shared semaphore it woke the first thread (whose wait then returned
// early) and the second slept out its whole 5 s slice.
void test_threads_waiting_alone_on_channels_that_share_a_doorbell() {
    const TestDoorbell bell;  // declared first: removed after the channels
    TestDriver slow(bell.name()), fast(bell.name());
    std::atomic<bool> release_slow{false};
    std::thread slow_simulator([name = slow.name(), &release_slow] {
        pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
        while (auto request = channel.wait()) {
            while (!release_slow.load()) std::this_thread::yield();
            channel.reply(1.0);
        }
    });
    std::thread fast_simulator([name = fast.name()] {
        pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
        while (auto request = channel.wait()) channel.reply(2.0);
    });
    CHECK(slow.wait_declared() && fast.wait_declared());
    slow.accept(1, 0, 0, 0);  // spin_us = 0: both drivers block at once
    fast.accept(1, 0, 0, 0);
    constexpr int64_t five_seconds = 5000000000;
    int slow_status = -100;
    slow.send(PYBRIDGE_REQUEST_COST, {1.0});
    std::thread slow_waiter([&] { slow_status = pybridge_driver_wait(slow.get(), five_seconds); });
    // Let the slow waiter fall asleep first (its flag says so), then make the fast channel reply.
    RawHeader slow_header(slow.name());
    while (load(slow_header->driver_sleeping) == 0) std::this_thread::yield();
    const auto started = std::chrono::steady_clock::now();
    fast.send(PYBRIDGE_REQUEST_COST, {1.0});
    const int fast_status = pybridge_driver_wait(fast.get(), five_seconds);
    const auto fast_took = std::chrono::steady_clock::now() - started;
    CHECK(fast_status == PYBRIDGE_OK && fast.reply().cost == 2.0);
    CHECK(fast_took < std::chrono::seconds(1));
    release_slow.store(true);
    slow_waiter.join();
    CHECK(slow_status == PYBRIDGE_OK && slow.reply().cost == 1.0);  // it did not return early
    slow.shut_down();
    fast.shut_down();
    slow_simulator.join();
    fast_simulator.join();
}

// Several threads each wait on channels of their own that share one doorbell
// (the starts of a multi-start run on a pool). A ring does not say whose
// reply it is: a thread that took another's ring, and its next one too, left
// that thread asleep until its timeout. Here one thread sits on the doorbell
// (its replies held back until the end), one churns it with 0.2 ms slices, and
// two ask two channels at a time with 1 s slices: none may sleep one out.
void test_threads_waiting_on_several_channels_of_one_doorbell() {
    const TestDoorbell bell;  // declared first: removed after the channels
    constexpr int kWaiters = 4, kPer = 2, kRounds = 300;
    constexpr int64_t kSlices[kWaiters] = {50000000, 200000, 1000000000, 1000000000};  // ns
    std::vector<std::unique_ptr<TestDriver>> drivers;
    for (int i = 0; i < kWaiters * kPer; ++i) drivers.push_back(std::make_unique<TestDriver>(bell.name()));
    std::atomic<bool> release{false};
    std::vector<std::thread> simulators;
    for (int i = 0; i < kWaiters * kPer; ++i) {
        simulators.emplace_back([name = drivers[i]->name(), held = i < kPer, i, &release] {
            pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
            for (int n = 0; auto request = channel.wait(); ++n) {
                while (held && !release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                if ((n + i) % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(100 * (i % 4)));
                channel.reply(request->params()[0] * 10.0);
            }
        });
    }
    for (auto &driver : drivers) {
        CHECK(driver->wait_declared());
        driver->accept(1, 0, 0, 0);  // spin_us = 0: every wait blocks
    }
    // Counted here, checked by the main thread (CHECK is not thread-safe).
    std::atomic<int> wrong{0}, slept_out{0}, lost{0};
    // One round of waiter k: both its channels asked, both replies taken.
    const auto round_of = [&](int k, double base) {
        pybridge_driver *mine[kPer];
        for (int j = 0; j < kPer; ++j) {
            mine[j] = drivers[k * kPer + j]->get();
            const double x = base + j;
            if (pybridge_driver_send(mine[j], PYBRIDGE_REQUEST_COST, &x) != PYBRIDGE_OK) ++wrong;
        }
        bool seen[kPer] = {};
        // Gives up 10 s after the replies can come (at once for the askers; at the release for the sitter).
        std::chrono::steady_clock::time_point give_up{};
        for (int left = kPer; left > 0;) {
            pybridge_driver *pending[kPer];
            size_t index_of[kPer], count = 0, ready = 0;
            for (int j = 0; j < kPer; ++j) {
                if (!seen[j]) pending[count] = mine[j], index_of[count++] = j;
            }
            const auto started = std::chrono::steady_clock::now();
            const int rc = pybridge_driver_wait_any(pending, count, kSlices[k], &ready);
            const bool long_slice = kSlices[k] >= 1000000000;
            if (long_slice && std::chrono::steady_clock::now() - started > std::chrono::milliseconds(500)) ++slept_out;
            if (rc == PYBRIDGE_TIMEOUT) {
                const auto now = std::chrono::steady_clock::now();
                if (give_up == std::chrono::steady_clock::time_point{} && (k > 0 || release.load())) {
                    give_up = now + std::chrono::seconds(10);
                }
                if (give_up != std::chrono::steady_clock::time_point{} && now > give_up) {
                    ++lost;
                    return;
                }
                continue;
            }
            if (rc != PYBRIDGE_OK || ready >= count) {
                ++wrong;
                return;
            }
            const size_t j = index_of[ready];
            pybridge_reply reply{};
            if (pybridge_driver_reply(mine[j], &reply) != PYBRIDGE_OK || reply.cost != (base + j) * 10.0) ++wrong;
            seen[j] = true;
            --left;
        }
    };
    std::thread sitter(round_of, 0, 0.0);  // its replies come at the release
    std::vector<std::thread> askers;
    for (int k = 1; k < kWaiters; ++k) {
        askers.emplace_back([&round_of, k] {
            for (int round = 1; round <= kRounds; ++round) round_of(k, round * 100.0);
        });
    }
    for (std::thread &asker : askers) asker.join();
    release.store(true);
    sitter.join();
    CHECK(wrong.load() == 0);
    CHECK(lost.load() == 0);
    CHECK(slept_out.load() == 0);
    for (auto &driver : drivers) driver->shut_down();
    for (std::thread &simulator : simulators) simulator.join();
}

// A process that forks while another of its threads waits on a doorbell (the
// starts of a multi-start run on a pool, beside a multiprocessing fork) may
// fork while that thread holds the lock of the doorbell's waiters. The child's
// copy of the lock is then held by a thread the child does not have, and its
// first wait on any doorbell hung for ever. Here two threads churn their waits
// (1 µs slices, the lock taken and released twice per wait) while the main
// thread forks 200 children, each of which waits on a doorbell once.
void test_a_fork_amid_doorbell_waits_never_hangs_the_child() {
    const TestDoorbell bell;  // declared first: removed after the channels
    constexpr int kChurners = 2, kForks = 200;
    std::vector<std::unique_ptr<TestDriver>> drivers;
    for (int i = 0; i < 2 * kChurners; ++i) drivers.push_back(std::make_unique<TestDriver>(bell.name()));
    std::atomic<bool> release{false}, stop{false};
    std::vector<std::thread> simulators;
    for (auto &driver : drivers) {
        simulators.emplace_back([name = driver->name(), &release] {
            pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
            while (auto request = channel.wait()) {
                while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                channel.reply(request->params()[0]);
            }
        });
    }
    for (auto &driver : drivers) {
        CHECK(driver->wait_declared());
        driver->accept(1, 0, 0, 0);
        driver->send(PYBRIDGE_REQUEST_COST, {1.0});  // answered only at the release
    }
    std::vector<std::thread> churners;
    for (int k = 0; k < kChurners; ++k) {
        churners.emplace_back([&, k] {
            pybridge_driver *mine[2] = {drivers[2 * k]->get(), drivers[2 * k + 1]->get()};
            size_t ready = 0;
            while (!stop.load()) pybridge_driver_wait_any(mine, 2, 1000, &ready);
        });
    }
    int hung = 0, failed = 0;
    for (int i = 0; i < kForks; ++i) {
        const pid_t child = ::fork();
        if (child == 0) {
            // The first churner's channels, as the child's copy has them: one wait of 1 ms.
            pybridge_driver *theirs[2] = {drivers[0]->get(), drivers[1]->get()};
            size_t ready = 0;
            const int rc = pybridge_driver_wait_any(theirs, 2, 1000000, &ready);
            ::_exit(rc == PYBRIDGE_TIMEOUT ? 0 : 1);  // not the parent's destructors
        }
        if (child < 0) {
            ++failed;
            continue;
        }
        int status = 0;
        pid_t done = 0;
        for (int polls = 0; (done = ::waitpid(child, &status, WNOHANG)) == 0 && polls < 2000; ++polls) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (done == 0) {  // 2 s for a 1 ms wait: hung
            ++hung;
            ::kill(child, SIGKILL);
            ::waitpid(child, &status, 0);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failed;
        }
    }
    stop.store(true);
    for (std::thread &churner : churners) churner.join();
    release.store(true);
    for (auto &driver : drivers) {
        CHECK(pybridge_driver_wait(driver->get(), 5000000000) == PYBRIDGE_OK);
        driver->shut_down();
    }
    for (std::thread &simulator : simulators) simulator.join();
    CHECK(hung == 0);
    CHECK(failed == 0);
}

// A C caller that means "no limit" passes INT64_MAX; adding it to a clock
// overflowed (undefined behaviour), and the waits returned at once, unanswered.
void test_a_timeout_of_int64_max_waits_for_the_reply() {
    const TestDoorbell bell;  // declared first: removed after the channels
    TestDriver first(bell.name()), second(bell.name());
    std::vector<std::thread> simulators;
    for (TestDriver *driver : {&first, &second}) {
        simulators.emplace_back([name = driver->name()] {
            pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
            while (auto request = channel.wait()) {
                std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past any spin: the waits block
                channel.reply(request->params()[0] * 10.0);
            }
        });
    }
    pybridge_declaration declaration{};
    int32_t pid = 0;
    for (TestDriver *driver : {&first, &second}) {
        CHECK(pybridge_driver_wait_declaration(driver->get(), INT64_MAX, &declaration, &pid) == PYBRIDGE_OK);
        driver->accept(1, 0, 0, 0);
    }
    first.send(PYBRIDGE_REQUEST_COST, {1.0});
    CHECK(pybridge_driver_wait(first.get(), INT64_MAX) == PYBRIDGE_OK && first.reply().cost == 10.0);
    first.send(PYBRIDGE_REQUEST_COST, {2.0});
    second.send(PYBRIDGE_REQUEST_COST, {3.0});
    pybridge_driver *both[2] = {first.get(), second.get()};
    size_t ready = 99;
    CHECK(pybridge_driver_wait_any(both, 2, INT64_MAX, &ready) == PYBRIDGE_OK && ready < 2);
    if (ready < 2) {
        TestDriver &other = ready == 0 ? second : first;
        CHECK(pybridge_driver_wait(other.get(), INT64_MAX) == PYBRIDGE_OK);
        CHECK(first.reply().cost == 20.0 && second.reply().cost == 30.0);
    }
    first.shut_down();
    second.shut_down();
    for (std::thread &simulator : simulators) simulator.join();
}

void test_cpp_api_residuals_and_reported_failures() {
    TestDriver driver;
    std::thread simulator([&] {
        pybridge::Channel channel = pybridge::Channel::open({2, 3, PYBRIDGE_CAP_RESIDUALS}, driver.name().c_str());
        while (auto request = channel.wait()) {
            const auto p = request->params();
            if (p[0] < 0) {
                channel.reply_error("p[0] must be >= 0");
                continue;
            }
            for (std::size_t i = 0; i < request->residuals().size(); ++i) request->residuals()[i] = p[0] * i + p[1];
            channel.reply_residuals();
        }
    });
    CHECK(driver.wait_declared());
    driver.accept(2, 3, PYBRIDGE_CAP_RESIDUALS);
    CHECK(driver.request(PYBRIDGE_REQUEST_RESIDUALS, {2.0, 1.0}));
    pybridge_reply reply = driver.reply();
    const double *r = reply.residuals;
    CHECK(r != nullptr && r[0] == 1.0 && r[1] == 3.0 && r[2] == 5.0);
    CHECK(std::isnan(reply.cost));
    CHECK(driver.request(PYBRIDGE_REQUEST_RESIDUALS, {-1.0, 0.0}));
    reply = driver.reply();
    CHECK(reply.status == PYBRIDGE_REPLY_FAILED);
    CHECK(std::strcmp(reply.error, "p[0] must be >= 0") == 0);
    CHECK(driver.request(PYBRIDGE_REQUEST_RESIDUALS, {0.0, 4.0}));  // still serving
    reply = driver.reply();
    CHECK(reply.status == PYBRIDGE_REPLY_OK && reply.residuals[2] == 4.0);
    // The driver API refuses what the simulator could not serve, and non-finite parameters, before sending.
    CHECK(pybridge_driver_send(driver.get(), PYBRIDGE_REQUEST_GRADIENT, nullptr) == PYBRIDGE_E_INVALID_ARGUMENT);
    const double nan_params[2] = {1.0, std::nan("")};
    CHECK(pybridge_driver_send(driver.get(), PYBRIDGE_REQUEST_RESIDUALS, nan_params) == PYBRIDGE_E_INVALID_ARGUMENT);
    CHECK(std::string(pybridge_driver_last_error(driver.get())).find("x[1]") != std::string::npos);
    CHECK(pybridge_driver_outcome(driver.get()) == PYBRIDGE_OUTCOME_NOT_SENT);
    driver.shut_down();
    simulator.join();
}

// A simulator that declares batches gets up to max_batch vectors per request
// and answers them all at once; the driver may agree to fewer, never to more,
// and a batch channel still takes single requests.
void test_batches_carry_several_vectors_per_request() {
    TestDriver driver;
    std::thread simulator([&] {
        pybridge::Channel channel =
            pybridge::Channel::open({3, 0, PYBRIDGE_CAP_GRADIENT, 8}, driver.name().c_str());
        while (auto request = channel.wait()) {
            for (std::size_t i = 0; i < request->count(); ++i) {
                const auto x = request->params(i);
                const double cost = rosenbrock(x.data(), 3, request->wants_gradient() ? request->gradient(i).data() : nullptr);
                request->costs()[i] = x[0] < -5.0 ? std::nan("") : cost;  // NaN: this vector failed
            }
            if (request->count() > 1 && pybridge_channel_reply(channel.handle(), 0.0) != PYBRIDGE_E_INVALID_ARGUMENT) {
                ++failures;  // one cost cannot answer several vectors
            }
            if (request->count() == 1 && request->params()[0] == 7.0) {
                channel.reply(-1.0);  // the single-vector reply works on a batch channel too
            } else {
                channel.reply_batch();
            }
        }
    });
    pybridge_declaration declared{};
    CHECK(driver.wait_declared(&declared));
    CHECK(declared.max_batch == 8);
    CHECK(pybridge_driver_accept(driver.get(), 3, 0, PYBRIDGE_CAP_GRADIENT, 9, 0) == PYBRIDGE_E_INVALID_ARGUMENT);
    CHECK(std::string(pybridge_driver_last_error(driver.get())).find("1 to 8") != std::string::npos);
    driver.accept(3, 0, PYBRIDGE_CAP_GRADIENT, 0, 4);  // fewer than declared: the driver's choice
    uint32_t max_batch = 0;
    CHECK(pybridge_driver_shape(driver.get(), nullptr, nullptr, nullptr, &max_batch) == PYBRIDGE_OK && max_batch == 4);
    const double xs[4 * 3] = {1, 1, 1, 0, 0, 0, -6, 0, 0, 2, 4, 16};
    CHECK(pybridge_driver_send_batch(driver.get(), PYBRIDGE_REQUEST_GRADIENT, 5, xs) == PYBRIDGE_E_INVALID_ARGUMENT);
    CHECK(pybridge_driver_send_batch(driver.get(), PYBRIDGE_REQUEST_GRADIENT, 4, xs) == PYBRIDGE_OK);
    bool answered = false;
    for (int i = 0; i < 50 && !answered; ++i) answered = pybridge_driver_wait(driver.get(), 100000000) == PYBRIDGE_OK;
    CHECK(answered);
    pybridge_reply reply = driver.reply();
    CHECK(reply.status == PYBRIDGE_REPLY_OK && reply.count == 4);
    for (int i = 0; i < 4; ++i) {
        double gradient[3];
        const double expected = rosenbrock(xs + 3 * i, 3, gradient);
        if (i == 2) {
            CHECK(std::isnan(reply.costs[i]));
            continue;
        }
        CHECK(reply.costs[i] == expected);
        CHECK(std::memcmp(reply.gradient + 3 * i, gradient, sizeof gradient) == 0);
    }
    CHECK(reply.cost == reply.costs[0]);
    CHECK(driver.request(PYBRIDGE_REQUEST_COST, {7.0, 0.0, 0.0}));
    reply = driver.reply();
    CHECK(reply.count == 1 && reply.cost == -1.0 && reply.costs[0] == -1.0);
    const double bad[6] = {0, 0, 0, 0, std::nan(""), 0};
    CHECK(pybridge_driver_send_batch(driver.get(), PYBRIDGE_REQUEST_COST, 2, bad) == PYBRIDGE_E_INVALID_ARGUMENT);
    CHECK(std::string(pybridge_driver_last_error(driver.get())).find("vector 1 has x[1]") != std::string::npos);
    driver.shut_down();
    simulator.join();
}

void test_rejection_reaches_the_simulator() {
    TestDriver driver;
    int status = 0;
    std::string message;
    std::thread simulator([&] {
        try {
            pybridge::Channel::open({3}, driver.name().c_str());
        } catch (const pybridge::Error &error) {
            status = error.code();
            message = error.what();
        }
    });
    CHECK(driver.wait_declared());
    driver.reject("the driver wants 4 parameters");
    simulator.join();
    CHECK(status == PYBRIDGE_E_REJECTED);
    CHECK(message.find("the driver wants 4 parameters") != std::string::npos);
}

void test_version_mismatch_names_both_versions() {
    TestDriver driver;
    RawHeader(driver.name())->version = 42;
    pybridge_channel *channel = nullptr;
    const pybridge_declaration declaration{1, 0, 0};
    CHECK(pybridge_channel_open(driver.name().c_str(), &declaration, &channel) == PYBRIDGE_E_PROTOCOL);
    const std::string message = pybridge_channel_last_error(channel);
    CHECK(message.find("version 42") != std::string::npos);
    CHECK(message.find("version " + std::to_string(PYBRIDGE_PROTOCOL_VERSION)) != std::string::npos);
    pybridge_channel_close(channel);
}

void test_dead_driver_is_noticed_and_its_channel_removed() {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);  // a pid that no longer runs
    TestDriver driver;
    RawHeader(driver.name())->driver_pid = child;
    pybridge_channel *channel = nullptr;
    const pybridge_declaration declaration{1, 0, 0};
    const auto started = std::chrono::steady_clock::now();
    CHECK(pybridge_channel_open(driver.name().c_str(), &declaration, &channel) == PYBRIDGE_E_DRIVER_GONE);
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
    CHECK(std::string(pybridge_channel_last_error(channel)).find("died") != std::string::npos);
    CHECK(!driver.exists());
    pybridge_channel_close(channel);
}

// Asked to, the simulator stamps when it picked the request up and when it
// replied (CLOCK_MONOTONIC, both processes' clock), so the driver splits
// the round trip into the request's latency, the model's time and the
// reply's latency. Unasked, it stamps nothing. Stamps that are missing (a
// shim older than them) or out of order (a stale or corrupt header) give
// -1, never a wrong latency.
void test_latency_splits_the_round_trip() {
    TestDriver driver;
    std::thread simulator([&] {
        const pybridge_declaration declaration{1, 0, 0};
        pybridge_channel *channel = nullptr;
        int rc = pybridge_channel_open(driver.name().c_str(), &declaration, &channel);
        pybridge_request request;
        while (rc == PYBRIDGE_OK && (rc = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the model's own time
            rc = pybridge_channel_reply(channel, request.params[0]);
        }
        pybridge_channel_close(channel);
    });
    CHECK(driver.wait_declared());
    driver.accept(1, 0, 0);
    int64_t request_ns = 0, reply_ns = 0;
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_E_INVALID_ARGUMENT);  // none yet
    RawHeader header(driver.name());
    CHECK(driver.request(PYBRIDGE_REQUEST_COST, {1.0}));  // not asked for: nothing stamped, nothing measured
    CHECK(header->picked_at_ns == 0 && header->replied_at_ns == 0);
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_OK);
    CHECK(request_ns == -1 && reply_ns == -1);
    CHECK(pybridge_driver_measure_latency(driver.get(), 1) == PYBRIDGE_OK);
    for (int i = 0; i < 5; ++i) {
        const auto started = std::chrono::steady_clock::now();
        CHECK(driver.request(PYBRIDGE_REQUEST_COST, {1.0 * i}));
        const int64_t elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - started).count();
        CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_OK);
        CHECK(request_ns >= 0 && reply_ns >= 0);
        CHECK(request_ns + 5000000 + reply_ns <= elapsed);
    }
    const int64_t picked = header->picked_at_ns, replied = header->replied_at_ns;
    header->replied_at_ns = 0;  // what a shim that does not stamp leaves there
    header->picked_at_ns = 0;
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_OK);
    CHECK(request_ns == -1 && reply_ns == -1);
    header->picked_at_ns = replied + 1;  // picked up after it replied
    header->replied_at_ns = replied;
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_OK);
    CHECK(request_ns == -1 && reply_ns == -1);
    header->picked_at_ns = picked;
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_OK);
    CHECK(request_ns >= 0 && reply_ns >= 0);
    driver.send(PYBRIDGE_REQUEST_COST, {1.0});  // pending: the stamps above are the last request's
    CHECK(pybridge_driver_latency(driver.get(), &request_ns, &reply_ns) == PYBRIDGE_E_INVALID_ARGUMENT);
    driver.shut_down();
    simulator.join();
}

// A driver and its simulator confined together to one CPU: a spin there holds the core the peer needs
// to answer, so accept writes a budget of 0 for both sides whatever was asked (and keeps the budget
// asked otherwise). The simulator is a thread of this process, whose pid names the main thread: the
// main thread is bound first, and the simulator thread inherits its mask.
void test_a_simulator_confined_to_the_drivers_cpu_spins_on_neither_side() {
    cpu_set_t allowed;
    CHECK(::sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    int first = 0;
    while (!CPU_ISSET(first, &allowed)) ++first;
    for (const bool confined : {true, false}) {
        if (!confined && CPU_COUNT(&allowed) < 2) continue;  // unbound is one CPU too
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        CHECK(::sched_setaffinity(0, sizeof(cpu_set_t), confined ? &one : &allowed) == 0);
        TestDriver driver;
        std::thread simulator([&] {
            pybridge::Channel channel = pybridge::Channel::open({2}, driver.name().c_str());
            while (auto request = channel.wait()) channel.reply(rosenbrock(request->params().data(), 2, nullptr));
        });
        CHECK(driver.wait_declared());
        driver.accept(2, 0, 0, 500);
        CHECK(RawHeader(driver.name())->spin_us == (confined ? 0u : 500u));
        CHECK(driver.request(PYBRIDGE_REQUEST_COST, {1.0, 1.0}));
        CHECK(driver.reply().cost == 0.0);
        driver.shut_down();
        simulator.join();
    }
    CHECK(::sched_setaffinity(0, sizeof allowed, &allowed) == 0);
}

// pybridge_driver_spin: a spin of at most max_ns within the plan's own (the Python binding's, with the
// GIL held, while other threads of its process wait on simulators too). It never spins past the plan
// nor blocks, and a wait afterwards carries on with the same request.
void test_a_bounded_spin_stays_within_the_plan_and_the_wait_carries_on() {
    TestDriver driver;
    std::atomic<bool> release{false};
    std::thread simulator([name = driver.name(), &release] {
        pybridge::Channel channel = pybridge::Channel::open({1}, name.c_str());
        while (auto request = channel.wait()) {
            while (!release.load()) std::this_thread::yield();
            channel.reply(request->params()[0] * 3.0);
        }
    });
    CHECK(driver.wait_declared());
    driver.accept(1, 0, 0, 500);  // a spin of 500 us per request
    CHECK(pybridge_driver_spin(driver.get(), 1000) == PYBRIDGE_E_INVALID_ARGUMENT);  // nothing sent
    driver.send(PYBRIDGE_REQUEST_COST, {2.0});
    const auto started = std::chrono::steady_clock::now();
    CHECK(pybridge_driver_spin(driver.get(), 2000000000) == PYBRIDGE_TIMEOUT);  // held back
    // Asked for 2 s: it stopped where the plan's 500 us spin ends (a whole second is room for any host).
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(1));
    CHECK(pybridge_driver_spin(driver.get(), 2000000000) == PYBRIDGE_TIMEOUT);  // past the spin: at once
    release.store(true);
    CHECK(pybridge_driver_wait(driver.get(), 5000000000) == PYBRIDGE_OK);
    CHECK(driver.reply().cost == 6.0);
    CHECK(pybridge_driver_spin(driver.get(), 0) == PYBRIDGE_OK);  // answered stays answered
    for (int i = 1; i <= 100; ++i) {  // answered at once: a spin and then a wait give each its own reply
        driver.send(PYBRIDGE_REQUEST_COST, {double(i)});
        int rc = pybridge_driver_spin(driver.get(), 10000);
        if (rc == PYBRIDGE_TIMEOUT) rc = pybridge_driver_wait(driver.get(), 5000000000);
        CHECK(rc == PYBRIDGE_OK);
        CHECK(driver.reply().cost == 3.0 * i);
        if (failures) break;
    }
    driver.shut_down();
    simulator.join();
}

void test_misuse_is_reported_not_fatal() {
    pybridge_channel *channel = nullptr;
    const pybridge_declaration declaration{1, 0, 0};
    CHECK(pybridge_channel_open("no/slashes", &declaration, &channel) == PYBRIDGE_E_INVALID_ARGUMENT);
    CHECK(pybridge_channel_reply(channel, 1.0) == PYBRIDGE_E_INVALID_ARGUMENT);
    pybridge_request request;
    CHECK(pybridge_channel_wait(channel, &request) == PYBRIDGE_E_INVALID_ARGUMENT);
    pybridge_channel_close(channel);
    CHECK(pybridge_channel_open("pybridge-cpptest-missing", &declaration, &channel) == PYBRIDGE_E_NO_CHANNEL);
    pybridge_channel_close(channel);
    CHECK(pybridge_channel_open(nullptr, nullptr, nullptr) == PYBRIDGE_E_INVALID_ARGUMENT);
    pybridge_channel_close(nullptr);
}

}  // namespace

int main() {
    test_a_fresh_name_records_its_maker();
    test_c_api_round_trips(0);    // the simulator blocks on every wait
    test_c_api_round_trips(1000);  // the simulator spins first
    test_one_thread_waits_on_two_channels_through_a_shared_doorbell();
    test_threads_waiting_alone_on_channels_that_share_a_doorbell();
    test_threads_waiting_on_several_channels_of_one_doorbell();
    test_a_timeout_of_int64_max_waits_for_the_reply();
    test_a_fork_amid_doorbell_waits_never_hangs_the_child();
    test_cpp_api_residuals_and_reported_failures();
    test_batches_carry_several_vectors_per_request();
    test_rejection_reaches_the_simulator();
    test_version_mismatch_names_both_versions();
    test_dead_driver_is_noticed_and_its_channel_removed();
    test_latency_splits_the_round_trip();
    test_a_simulator_confined_to_the_drivers_cpu_spins_on_neither_side();
    test_a_bounded_spin_stays_within_the_plan_and_the_wait_carries_on();
    test_misuse_is_reported_not_fatal();
    std::printf("test_shim: %s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
