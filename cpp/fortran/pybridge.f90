! pybridge.f90 — the Fortran binding of the pybridge shim (module pybridge).
!
! The C API of pybridge/pybridge.h, call for call, through iso_c_binding: the same names, the same
! integer statuses (PYBRIDGE_OK, PYBRIDGE_CLOSED, PYBRIDGE_E_*), the request's regions as Fortran
! pointers into the shared segment. A simulator's whole loop:
!
!     use pybridge
!     type(pybridge_channel) :: channel
!     type(pybridge_request) :: request
!     integer :: status
!     status = pybridge_channel_open(channel, pybridge_declaration(n_params=3))
!     do while (status == PYBRIDGE_OK)
!        status = pybridge_channel_wait(channel, request)
!        if (status /= PYBRIDGE_OK) exit
!        status = pybridge_channel_reply(channel, my_model(request%params))
!     end do
!     if (status /= PYBRIDGE_CLOSED) write (error_unit, '(a)') pybridge_channel_last_error(channel)
!     call pybridge_channel_close(channel)
!
! Why a source file and not a compiled .mod: module files are private to one compiler and its version,
! so the consumer compiles this file with its own compiler (pybridge::fortran in CMake does it; with a
! Makefile, compile $(pkg-config --variable=fortran_source pybridge) first).
!
! The values below repeat those of the C headers; the test suite compiles this module and checks each
! one against them.
module pybridge
   use, intrinsic :: iso_c_binding, only: c_associated, c_char, c_double, c_f_pointer, c_int, c_int32_t, &
                                          c_int64_t, c_null_char, c_null_ptr, c_ptr, c_size_t
   implicit none
   private

   ! enum pybridge_status
   integer, parameter, public :: PYBRIDGE_OK = 0
   integer, parameter, public :: PYBRIDGE_CLOSED = 1
   integer, parameter, public :: PYBRIDGE_TIMEOUT = 2
   integer, parameter, public :: PYBRIDGE_E_INVALID_ARGUMENT = -1
   integer, parameter, public :: PYBRIDGE_E_NO_CHANNEL = -2
   integer, parameter, public :: PYBRIDGE_E_SYSTEM = -3
   integer, parameter, public :: PYBRIDGE_E_PROTOCOL = -4
   integer, parameter, public :: PYBRIDGE_E_REJECTED = -5
   integer, parameter, public :: PYBRIDGE_E_DRIVER_GONE = -6
   integer, parameter, public :: PYBRIDGE_E_TAKEN = -7
   integer, parameter, public :: PYBRIDGE_E_NO_SPACE = -8
   ! enum pybridge_capability
   integer, parameter, public :: PYBRIDGE_CAP_GRADIENT = 1
   integer, parameter, public :: PYBRIDGE_CAP_RESIDUALS = 2
   ! enum pybridge_request_kind
   integer, parameter, public :: PYBRIDGE_REQUEST_COST = 1
   integer, parameter, public :: PYBRIDGE_REQUEST_GRADIENT = 2
   integer, parameter, public :: PYBRIDGE_REQUEST_RESIDUALS = 3

   !> What the simulator computes (struct pybridge_declaration). A count of 0 lets the driver decide.
   !> pybridge_declaration(n_params=3), pybridge_declaration(3, 50, PYBRIDGE_CAP_RESIDUALS), ...
   type, bind(c), public :: pybridge_declaration
      integer(c_int32_t) :: n_params = 0
      integer(c_int32_t) :: n_residuals = 0
      integer(c_int32_t) :: capabilities = 0
      integer(c_int32_t) :: max_batch = 0
   end type pybridge_declaration

   !> An open channel. Holds the C handle; copy it freely, close it once.
   type, public :: pybridge_channel
      type(c_ptr) :: handle = c_null_ptr
   end type pybridge_channel

   !> One request (struct pybridge_request), its regions as pointers into shared memory, valid until
   !> the reply: read params in place, write gradient, residuals or costs in place, then reply.
   !> Vector i (1-based) of a batch is params((i-1)*n_params+1 : i*n_params); count is 1 unless the
   !> simulator declared max_batch > 1. Regions the request does not ask for are not associated.
   type, public :: pybridge_request
      integer(c_int64_t) :: seq = 0
      integer :: kind = 0
      integer :: n_params = 0
      integer :: n_residuals = 0
      integer :: count = 0
      real(c_double), pointer, contiguous :: params(:) => null()
      real(c_double), pointer, contiguous :: gradient(:) => null()
      real(c_double), pointer, contiguous :: residuals(:) => null()
      real(c_double), pointer, contiguous :: costs(:) => null()
   end type pybridge_request

   public :: pybridge_channel_open, pybridge_channel_close, pybridge_channel_wait, pybridge_channel_reply, &
             pybridge_channel_reply_batch, pybridge_channel_reply_residuals, pybridge_channel_reply_error, &
             pybridge_channel_last_error, pybridge_channel_name, pybridge_channel_driver_alive, &
             pybridge_channel_set_watchdog, pybridge_version

   ! The C structure as the shim fills it; turned into pybridge_request by pybridge_channel_wait.
   type, bind(c) :: c_request
      integer(c_int64_t) :: seq
      integer(c_int32_t) :: kind
      integer(c_int32_t) :: n_params
      type(c_ptr) :: params
      type(c_ptr) :: gradient
      integer(c_int32_t) :: n_residuals
      type(c_ptr) :: residuals
      integer(c_int32_t) :: count
      type(c_ptr) :: costs
   end type c_request

   interface
      integer(c_int) function c_open(name, declaration, out) bind(c, name="pybridge_channel_open")
         import :: c_int, c_ptr, pybridge_declaration
         type(c_ptr), value :: name
         type(pybridge_declaration), intent(in) :: declaration
         type(c_ptr), intent(out) :: out
      end function c_open
      subroutine c_close(channel) bind(c, name="pybridge_channel_close")
         import :: c_ptr
         type(c_ptr), value :: channel
      end subroutine c_close
      integer(c_int) function c_wait(channel, request) bind(c, name="pybridge_channel_wait")
         import :: c_int, c_ptr, c_request
         type(c_ptr), value :: channel
         type(c_request), intent(out) :: request
      end function c_wait
      integer(c_int) function c_reply(channel, cost) bind(c, name="pybridge_channel_reply")
         import :: c_int, c_ptr, c_double
         type(c_ptr), value :: channel
         real(c_double), value :: cost
      end function c_reply
      integer(c_int) function c_reply_batch(channel) bind(c, name="pybridge_channel_reply_batch")
         import :: c_int, c_ptr
         type(c_ptr), value :: channel
      end function c_reply_batch
      integer(c_int) function c_reply_residuals(channel) bind(c, name="pybridge_channel_reply_residuals")
         import :: c_int, c_ptr
         type(c_ptr), value :: channel
      end function c_reply_residuals
      integer(c_int) function c_reply_error(channel, message) bind(c, name="pybridge_channel_reply_error")
         import :: c_int, c_ptr, c_char
         type(c_ptr), value :: channel
         character(kind=c_char), intent(in) :: message(*)
      end function c_reply_error
      type(c_ptr) function c_last_error(channel) bind(c, name="pybridge_channel_last_error")
         import :: c_ptr
         type(c_ptr), value :: channel
      end function c_last_error
      type(c_ptr) function c_name(channel) bind(c, name="pybridge_channel_name")
         import :: c_ptr
         type(c_ptr), value :: channel
      end function c_name
      integer(c_int) function c_driver_alive(channel) bind(c, name="pybridge_channel_driver_alive")
         import :: c_int, c_ptr
         type(c_ptr), value :: channel
      end function c_driver_alive
      integer(c_int) function c_set_watchdog(channel, enabled) bind(c, name="pybridge_channel_set_watchdog")
         import :: c_int, c_ptr
         type(c_ptr), value :: channel
         integer(c_int), value :: enabled
      end function c_set_watchdog
      type(c_ptr) function c_version() bind(c, name="pybridge_version")
         import :: c_ptr
      end function c_version
      integer(c_size_t) function c_strlen(text) bind(c, name="strlen")
         import :: c_size_t, c_ptr
         type(c_ptr), value :: text
      end function c_strlen
   end interface

contains

   !> Attaches to the channel and performs the handshake (pybridge_channel_open). Without name, the
   !> channel is the one in PYBRIDGE_CHANNEL (set by pybridge.Simulator when it launches you). The
   !> channel holds a handle even when this fails: read pybridge_channel_last_error, then close it.
   integer function pybridge_channel_open(channel, declaration, name) result(status)
      type(pybridge_channel), intent(out) :: channel
      type(pybridge_declaration), intent(in) :: declaration
      character(len=*), intent(in), optional :: name
      character(kind=c_char, len=:), allocatable, target :: c_text
      if (present(name)) then
         c_text = trim(name)//c_null_char
         status = c_open(c_loc_of(c_text), declaration, channel%handle)
      else
         status = c_open(c_null_ptr, declaration, channel%handle)
      end if
   end function pybridge_channel_open

   !> Detaches and frees the handle (pybridge_channel_close); a channel never opened is ignored.
   subroutine pybridge_channel_close(channel)
      type(pybridge_channel), intent(inout) :: channel
      call c_close(channel%handle)
      channel%handle = c_null_ptr
   end subroutine pybridge_channel_close

   !> Waits for the next request (pybridge_channel_wait): PYBRIDGE_OK with a request to answer,
   !> PYBRIDGE_CLOSED when the driver shut the channel down, a negative status on error.
   integer function pybridge_channel_wait(channel, request) result(status)
      type(pybridge_channel), intent(in) :: channel
      type(pybridge_request), intent(out) :: request
      type(c_request) :: raw
      status = c_wait(channel%handle, raw)
      if (status /= PYBRIDGE_OK) return
      request%seq = raw%seq
      request%kind = int(raw%kind)
      request%n_params = int(raw%n_params)
      request%n_residuals = int(raw%n_residuals)
      request%count = int(raw%count)
      call c_f_pointer(raw%params, request%params, [request%count*request%n_params])
      if (c_associated(raw%gradient)) call c_f_pointer(raw%gradient, request%gradient, [request%count*request%n_params])
      if (c_associated(raw%residuals)) &
         call c_f_pointer(raw%residuals, request%residuals, [request%count*request%n_residuals])
      if (c_associated(raw%costs)) call c_f_pointer(raw%costs, request%costs, [request%count])
   end function pybridge_channel_wait

   !> Replies to a one-vector request with its cost (pybridge_channel_reply); for a gradient request,
   !> fill request%gradient first.
   integer function pybridge_channel_reply(channel, cost) result(status)
      type(pybridge_channel), intent(in) :: channel
      real(c_double), intent(in) :: cost
      status = c_reply(channel%handle, cost)
   end function pybridge_channel_reply

   !> Replies to a request of any count: request%costs (and what else it asked for) filled.
   integer function pybridge_channel_reply_batch(channel) result(status)
      type(pybridge_channel), intent(in) :: channel
      status = c_reply_batch(channel%handle)
   end function pybridge_channel_reply_batch

   !> Replies to a residual request: request%residuals filled.
   integer function pybridge_channel_reply_residuals(channel) result(status)
      type(pybridge_channel), intent(in) :: channel
      status = c_reply_residuals(channel%handle)
   end function pybridge_channel_reply_residuals

   !> Reports that this evaluation failed; the message reaches the driver's exception. Keep serving.
   integer function pybridge_channel_reply_error(channel, message) result(status)
      type(pybridge_channel), intent(in) :: channel
      character(len=*), intent(in) :: message
      status = c_reply_error(channel%handle, trim(message)//c_null_char)
   end function pybridge_channel_reply_error

   !> The message of the last failed call on this channel ("" if none).
   function pybridge_channel_last_error(channel) result(message)
      type(pybridge_channel), intent(in) :: channel
      character(len=:), allocatable :: message
      message = from_c_string(c_last_error(channel%handle))
   end function pybridge_channel_last_error

   !> The channel's name, without the leading '/'.
   function pybridge_channel_name(channel) result(name)
      type(pybridge_channel), intent(in) :: channel
      character(len=:), allocatable :: name
      name = from_c_string(c_name(channel%handle))
   end function pybridge_channel_name

   !> PYBRIDGE_OK while the driver runs, PYBRIDGE_CLOSED once it shut the channel down,
   !> PYBRIDGE_E_DRIVER_GONE once it died. Cheap: call it between the steps of a long evaluation.
   integer function pybridge_channel_driver_alive(channel) result(status)
      type(pybridge_channel), intent(in) :: channel
      status = c_driver_alive(channel%handle)
   end function pybridge_channel_driver_alive

   !> Turns the watchdog (SIGTERM to this process when the driver dies mid-evaluation) on or off.
   integer function pybridge_channel_set_watchdog(channel, enabled) result(status)
      type(pybridge_channel), intent(in) :: channel
      logical, intent(in) :: enabled
      status = c_set_watchdog(channel%handle, merge(1_c_int, 0_c_int, enabled))
   end function pybridge_channel_set_watchdog

   !> The shim library's version, "MAJOR.MINOR.PATCH".
   function pybridge_version() result(version)
      character(len=:), allocatable :: version
      version = from_c_string(c_version())
   end function pybridge_version

   ! ---- helpers -----------------------------------------------------------------------------

   function from_c_string(text) result(copy)
      type(c_ptr), intent(in) :: text
      character(len=:), allocatable :: copy
      character(kind=c_char), pointer :: chars(:)
      integer :: i, length
      if (.not. c_associated(text)) then
         copy = ""
         return
      end if
      length = int(c_strlen(text))
      call c_f_pointer(text, chars, [length])
      allocate (character(len=length) :: copy)
      do i = 1, length
         copy(i:i) = chars(i)
      end do
   end function from_c_string

   function c_loc_of(text) result(pointer)
      use, intrinsic :: iso_c_binding, only: c_loc
      character(kind=c_char, len=*), intent(in), target :: text
      type(c_ptr) :: pointer
      pointer = c_loc(text)
   end function c_loc_of

end module pybridge
