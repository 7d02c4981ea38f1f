// pybridge/pybridge.hpp — the C++ face of the pybridge shim.
//
// A thin, header-only, move-only wrapper over the C API in pybridge.h (the
// shared library exports C symbols only, so any C++ compiler can use it).
// Errors become pybridge::Error exceptions here, in *your* code; nothing
// throws inside the library. The simulator loop:
//
//     #include <pybridge/pybridge.hpp>
//
//     int main() {
//         pybridge::Channel channel = pybridge::Channel::open({3});  // 3 parameters, cost only
//         while (auto request = channel.wait()) {                   // empty when the driver closes
//             auto x = request->params();                           // a view into shared memory
//             channel.reply(my_model(x.data(), x.size()));
//         }
//     }
//
// A gradient simulator declares pybridge::Declaration{n, 0, PYBRIDGE_CAP_GRADIENT},
// fills request->gradient() when request->wants_gradient(), then replies with
// the cost. A residual simulator declares {n, m, PYBRIDGE_CAP_RESIDUALS},
// fills request->residuals() and calls reply_residuals(). To report that one
// evaluation failed without stopping, call reply_error(message).
//
// A vectorised (or GPU) simulator declares max_batch = K: a request then
// carries request->count() <= K vectors; vector i is request->params(i), its
// cost goes to request->costs()[i] (NaN marks that one vector as failed), its
// gradient or residuals to request->gradient(i) or request->residuals(i);
// then reply_batch().
//
// Thread safety: one Channel per thread; distinct Channels are independent.
#ifndef PYBRIDGE_PYBRIDGE_HPP
#define PYBRIDGE_PYBRIDGE_HPP

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "pybridge/pybridge.h"

namespace pybridge {

/// A failed call into the shim. code() is the PYBRIDGE_E_* status.
class Error : public std::runtime_error {
public:
    Error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

private:
    int code_;
};

/// A contiguous view of doubles in the shared segment (std::span arrives only in C++20).
template <typename T>
class Span {
public:
    Span() = default;
    Span(T *data, std::size_t size) : data_(data), size_(size) {}
    T *data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T &operator[](std::size_t i) const noexcept { return data_[i]; }
    T *begin() const noexcept { return data_; }
    T *end() const noexcept { return data_ + size_; }

private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

/// What the simulator computes; a count of 0 lets the driver decide.
struct Declaration {
    uint32_t n_params = 0;
    uint32_t n_residuals = 0;
    uint32_t capabilities = 0;  ///< PYBRIDGE_CAP_* flags
    uint32_t max_batch = 0;     ///< parameter vectors one request may carry; 0 or 1 = one
};

/// One evaluation request; its views are valid until the reply.
class Request {
public:
    explicit Request(const pybridge_request &raw) : raw_(raw) {}
    uint64_t seq() const noexcept { return raw_.seq; }
    /// How many parameter vectors this request carries (1 unless max_batch was declared).
    std::size_t count() const noexcept { return raw_.count; }
    /// Parameter vector i (of count()), read in place.
    Span<const double> params(std::size_t i = 0) const noexcept {
        return {raw_.params + i * raw_.n_params, raw_.n_params};
    }
    bool wants_gradient() const noexcept { return raw_.kind == PYBRIDGE_REQUEST_GRADIENT; }
    bool wants_residuals() const noexcept { return raw_.kind == PYBRIDGE_REQUEST_RESIDUALS; }
    /// Where to write the gradient of vector i (empty unless wants_gradient()).
    Span<double> gradient(std::size_t i = 0) const noexcept {
        return raw_.gradient ? Span<double>{raw_.gradient + i * raw_.n_params, raw_.n_params} : Span<double>{};
    }
    /// Where to write the residuals of vector i (empty unless wants_residuals()).
    Span<double> residuals(std::size_t i = 0) const noexcept {
        return raw_.residuals ? Span<double>{raw_.residuals + i * raw_.n_residuals, raw_.n_residuals} : Span<double>{};
    }
    /// Where to write the count() costs before Channel::reply_batch().
    Span<double> costs() const noexcept { return {raw_.costs, raw_.count}; }
    const pybridge_request &raw() const noexcept { return raw_; }

private:
    pybridge_request raw_;
};

/// The simulator's end of a channel. Move-only; closes itself.
class Channel {
public:
    /// Attaches to the channel named by $PYBRIDGE_CHANNEL (or `name`) and
    /// performs the handshake. Throws pybridge::Error on failure.
    static Channel open(const Declaration &declaration, const char *name = nullptr) {
        const pybridge_declaration raw{declaration.n_params, declaration.n_residuals, declaration.capabilities,
                                       declaration.max_batch};
        pybridge_channel *handle = nullptr;
        const int status = pybridge_channel_open(name, &raw, &handle);
        Channel channel(handle);  // owns the handle even on failure
        if (status != PYBRIDGE_OK) channel.raise(status);
        return channel;
    }

    Channel(Channel &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Channel &operator=(Channel &&other) noexcept {
        if (this != &other) {
            pybridge_channel_close(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Channel(const Channel &) = delete;
    Channel &operator=(const Channel &) = delete;
    ~Channel() { pybridge_channel_close(handle_); }

    /// The next request, or std::nullopt once the driver has closed the
    /// channel. Throws pybridge::Error if the driver died or on a protocol error.
    std::optional<Request> wait() {
        pybridge_request raw{};
        const int status = pybridge_channel_wait(handle_, &raw);
        if (status == PYBRIDGE_CLOSED) return std::nullopt;
        if (status != PYBRIDGE_OK) raise(status);
        return Request(raw);
    }

    /// Replies with the cost (write the gradient into request.gradient() first).
    void reply(double cost) { check(pybridge_channel_reply(handle_, cost)); }
    /// Replies to a request of any count: request.costs() (and its gradients or residuals) are filled.
    void reply_batch() { check(pybridge_channel_reply_batch(handle_)); }
    /// Replies to a residual request (request.residuals() is filled).
    void reply_residuals() { check(pybridge_channel_reply_residuals(handle_)); }
    /// Reports that this evaluation failed; the channel stays usable.
    void reply_error(const std::string &message) { check(pybridge_channel_reply_error(handle_, message.c_str())); }

    /// False once the driver has died or closed the channel: a long evaluation may ask between its
    /// steps and stop early (turn the watchdog off first, or it ends the process before you can).
    bool driver_alive() const noexcept { return pybridge_channel_driver_alive(handle_) == PYBRIDGE_OK; }
    /// Turns the watchdog thread on or off (see pybridge_channel_set_watchdog).
    void set_watchdog(bool enabled) { check(pybridge_channel_set_watchdog(handle_, enabled ? 1 : 0)); }

    std::string name() const { return pybridge_channel_name(handle_); }
    pybridge_channel *handle() const noexcept { return handle_; }

private:
    explicit Channel(pybridge_channel *handle) noexcept : handle_(handle) {}
    void check(int status) const {
        if (status != PYBRIDGE_OK) raise(status);
    }
    [[noreturn]] void raise(int status) const { throw Error(status, pybridge_channel_last_error(handle_)); }

    pybridge_channel *handle_ = nullptr;
};

}  // namespace pybridge

#endif  // PYBRIDGE_PYBRIDGE_HPP
