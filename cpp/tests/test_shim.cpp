// Tests of the shim through its C and C++ APIs. A minimal driver written
// here (the real one is Python) plays the other end from the main thread
// while the simulator loop runs in a second thread: sanitizers, TSan above
// all, then see both ends of every exchange.

#include <fcntl.h>
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
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pybridge/pybridge.hpp"

namespace {

int failures = 0;

#define CHECK(condition)                                                               \
    do {                                                                               \
        if (!(condition)) {                                                            \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
            ++failures;                                                                \
        }                                                                              \
    } while (0)

template <typename T>
T load(const T &field) {
    return __atomic_load_n(&field, __ATOMIC_ACQUIRE);
}
template <typename T>
void store(T &field, T value) {
    __atomic_store_n(&field, value, __ATOMIC_RELEASE);
}

// The driver's side of the protocol, as docs/protocol.md describes it.
class TestDriver {
public:
    // reply_semaphore: the semaphore the simulator posts; empty = this channel's own "-rep".
    explicit TestDriver(pid_t driver_pid = ::getpid(), const std::string &reply_semaphore = "") {
        std::random_device random;
        char name[64];
        std::snprintf(name, sizeof name, "pybridge-cpptest-%08x%08x", random(), random());
        name_ = name;
        fd_ = ::shm_open(object().c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd_ < 0 || ::ftruncate(fd_, sizeof(pybridge_header)) != 0) std::perror("shm_open/ftruncate");
        map();
        header_->magic = PYBRIDGE_MAGIC;
        header_->version = PYBRIDGE_PROTOCOL_VERSION;
        header_->header_size = sizeof(pybridge_header);
        header_->segment_size = sizeof(pybridge_header);
        header_->driver_pid = driver_pid;
        const std::string reply_name =
            reply_semaphore.empty() ? name_ + PYBRIDGE_REPLY_SEM_SUFFIX : reply_semaphore;
        std::snprintf(header_->reply_semaphore, sizeof header_->reply_semaphore, "%s", reply_name.c_str());
        header_->state = PYBRIDGE_STATE_CREATED;
        request_ = ::sem_open((object() + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str(), O_CREAT | O_EXCL, 0600, 0);
        reply_ = ::sem_open(("/" + reply_name).c_str(), O_CREAT, 0600, 0);  // shared: may exist already
    }
    ~TestDriver() {
        ::munmap(header_, size_);
        ::close(fd_);
        ::sem_close(request_);
        ::sem_close(reply_);
        remove();
    }
    void remove() {
        ::shm_unlink(object().c_str());
        ::sem_unlink((object() + PYBRIDGE_REQUEST_SEM_SUFFIX).c_str());
        ::sem_unlink((object() + PYBRIDGE_REPLY_SEM_SUFFIX).c_str());
    }
    const std::string &name() const { return name_; }
    bool exists() const {
        const int fd = ::shm_open(object().c_str(), O_RDWR, 0);
        if (fd >= 0) ::close(fd);
        return fd >= 0;
    }

    bool wait_declared() { return wait_until([&] { return load(header_->state) == PYBRIDGE_STATE_DECLARED; }); }
    void accept(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities, uint32_t spin_us = 0) {
        pybridge_layout layout;
        pybridge_layout_compute(n_params, n_residuals, capabilities, &layout);
        if (::ftruncate(fd_, static_cast<off_t>(layout.segment_size)) != 0) std::perror("ftruncate");
        ::munmap(header_, size_);
        map();
        header_->n_params = n_params;
        header_->n_residuals = n_residuals;
        header_->capabilities = capabilities;
        header_->spin_us = spin_us;
        header_->params_offset = layout.params_offset;
        header_->gradient_offset = layout.gradient_offset;
        header_->residuals_offset = layout.residuals_offset;
        header_->segment_size = layout.segment_size;
        set_state(PYBRIDGE_STATE_READY);
    }
    void reject(const char *reason) {
        std::snprintf(header_->error, sizeof header_->error, "%s", reason);
        set_state(PYBRIDGE_STATE_REJECTED);
    }
    void shut_down() { set_state(PYBRIDGE_STATE_CLOSED); }

    // Sends a request without waiting for its reply.
    uint64_t send(uint32_t kind, const std::vector<double> &params) {
        std::memcpy(region(header_->params_offset), params.data(), params.size() * sizeof(double));
        header_->request_kind = kind;
        const uint64_t seq = ++seq_;
        __atomic_store_n(&header_->request_seq, seq, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&header_->simulator_sleeping, __ATOMIC_SEQ_CST)) ::sem_post(request_);
        return seq;
    }
    bool answered() { return load(header_->reply_seq) == seq_; }
    sem_t *reply_semaphore() const { return reply_; }

    // One request; returns false if no reply came within a few seconds.
    bool request(uint32_t kind, const std::vector<double> &params) {
        send(kind, params);
        return wait_until([&] { return answered(); });
    }
    pybridge_header &header() { return *header_; }
    double *region(uint64_t offset) { return reinterpret_cast<double *>(reinterpret_cast<char *>(header_) + offset); }
    uint64_t seq() const { return seq_; }

private:
    std::string object() const { return "/" + name_; }
    void map() {
        struct stat info;
        ::fstat(fd_, &info);
        size_ = static_cast<size_t>(info.st_size);
        header_ = static_cast<pybridge_header *>(::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0));
    }
    void set_state(uint32_t state) {
        store(header_->state, state);
        ::sem_post(request_);
    }
    // Blocks as docs/protocol.md says a driver does: raise driver_sleeping,
    // look once more, then sleep on the reply semaphore.
    bool wait_until(const std::function<bool()> &ready) {
        for (int i = 0; i < 50; ++i) {  // 50 x 100 ms
            __atomic_store_n(&header_->driver_sleeping, 1u, __ATOMIC_SEQ_CST);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (ready()) {
                __atomic_store_n(&header_->driver_sleeping, 0u, __ATOMIC_SEQ_CST);
                return true;
            }
            timespec deadline;
            ::clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += 100000000L;
            deadline.tv_sec += deadline.tv_nsec / 1000000000L;
            deadline.tv_nsec %= 1000000000L;
            ::sem_timedwait(reply_, &deadline);
            __atomic_store_n(&header_->driver_sleeping, 0u, __ATOMIC_SEQ_CST);
            if (ready()) return true;
        }
        return false;
    }

    std::string name_;
    int fd_ = -1;
    size_t size_ = 0;
    pybridge_header *header_ = nullptr;
    sem_t *request_ = SEM_FAILED;
    sem_t *reply_ = SEM_FAILED;
    uint64_t seq_ = 0;
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
    CHECK(driver.wait_declared());
    CHECK(driver.header().declared_capabilities == PYBRIDGE_CAP_GRADIENT);
    CHECK(driver.header().simulator_pid == ::getpid());
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
        CHECK(driver.header().reply_status == PYBRIDGE_REPLY_OK);
        CHECK(driver.header().cost == expected);
        if (gradient) {
            CHECK(std::memcmp(driver.region(driver.header().gradient_offset), expected_gradient, sizeof expected_gradient) == 0);
        }
        if (failures) break;
    }
    driver.shut_down();
    simulator.join();
    CHECK(loop_status == PYBRIDGE_CLOSED);
}

// One driver thread waits on two channels at once: both name the same reply
// semaphore (a "doorbell"), so the driver raises driver_sleeping on both and
// blocks on that one semaphore until every reply is in. Pools build on this.
void test_one_thread_waits_on_two_channels_through_a_shared_doorbell() {
    std::random_device random;
    char doorbell[64];
    std::snprintf(doorbell, sizeof doorbell, "pybridge-cpptest-bell-%08x", random());
    {
        TestDriver first(::getpid(), doorbell), second(::getpid(), doorbell);
        TestDriver *drivers[2] = {&first, &second};
        std::vector<std::thread> simulators;
        for (TestDriver *driver : drivers) {
            simulators.emplace_back([driver] {
                pybridge::Channel channel = pybridge::Channel::open({1}, driver->name().c_str());
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
            int waits = 0;
            while (!(first.answered() && second.answered()) && waits < 50) {
                for (TestDriver *driver : drivers) __atomic_store_n(&driver->header().driver_sleeping, 1u, __ATOMIC_SEQ_CST);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if (!(first.answered() && second.answered())) {
                    timespec deadline;
                    ::clock_gettime(CLOCK_REALTIME, &deadline);
                    deadline.tv_sec += 1;
                    if (::sem_timedwait(first.reply_semaphore(), &deadline) != 0) ++waits;
                }
                for (TestDriver *driver : drivers) __atomic_store_n(&driver->header().driver_sleeping, 0u, __ATOMIC_SEQ_CST);
            }
            CHECK(first.answered() && second.answered());
            CHECK(first.header().cost == 10.0 * round && second.header().cost == -10.0 * round);
            if (failures) break;
        }
        for (TestDriver *driver : drivers) driver->shut_down();
        for (std::thread &simulator : simulators) simulator.join();
    }
    ::sem_unlink(("/" + std::string(doorbell)).c_str());
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
    const double *r = driver.region(driver.header().residuals_offset);
    CHECK(r[0] == 1.0 && r[1] == 3.0 && r[2] == 5.0);
    CHECK(std::isnan(driver.header().cost));
    CHECK(driver.request(PYBRIDGE_REQUEST_RESIDUALS, {-1.0, 0.0}));
    CHECK(driver.header().reply_status == PYBRIDGE_REPLY_FAILED);
    CHECK(std::strcmp(driver.header().error, "p[0] must be >= 0") == 0);
    CHECK(driver.request(PYBRIDGE_REQUEST_RESIDUALS, {0.0, 4.0}));  // still serving
    CHECK(driver.header().reply_status == PYBRIDGE_REPLY_OK && r[2] == 4.0);
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
    driver.header().version = 42;
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
    TestDriver driver(child);
    pybridge_channel *channel = nullptr;
    const pybridge_declaration declaration{1, 0, 0};
    const auto started = std::chrono::steady_clock::now();
    CHECK(pybridge_channel_open(driver.name().c_str(), &declaration, &channel) == PYBRIDGE_E_DRIVER_GONE);
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
    CHECK(std::string(pybridge_channel_last_error(channel)).find("died") != std::string::npos);
    CHECK(!driver.exists());
    pybridge_channel_close(channel);
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
    test_c_api_round_trips(0);    // the simulator blocks on every wait
    test_c_api_round_trips(1000);  // the simulator spins first
    test_one_thread_waits_on_two_channels_through_a_shared_doorbell();
    test_cpp_api_residuals_and_reported_failures();
    test_rejection_reaches_the_simulator();
    test_version_mismatch_names_both_versions();
    test_dead_driver_is_noticed_and_its_channel_removed();
    test_misuse_is_reported_not_fatal();
    std::printf("test_shim: %s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
