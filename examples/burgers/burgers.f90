! pybridge-burgers: a 1-D viscous Burgers solver in Fortran, served through `use pybridge`.
!
!     u_t + u u_x = nu u_xx   on a periodic [0, 2 pi),   u(x, 0) = c + a sin(x)
!
! Parameters (nu, a, c): viscosity, amplitude and mean of the initial wave. The model's answer is the
! field u(x_i, T) at 64 points, T = 1; the simulator replies with the residuals u(x_i, T) - observed_i,
! where the observations are read from the file named by the first argument (64 numbers), or are
! zero without one (then the residuals are the field itself: how the tests make synthetic data).
!
! Discretisation: second-order central differences in space on the conservative form
! (u^2/2)_x, Heun's method (RK2) in time with a fixed step well inside the diffusive and advective
! limits of the parameter ranges below.
program burgers
   use, intrinsic :: iso_fortran_env, only: error_unit, real64
   use pybridge
   implicit none

   integer, parameter :: n_points = 64
   real(real64), parameter :: pi = acos(-1.0_real64), t_end = 1.0_real64, dt = 1.0e-3_real64
   real(real64) :: observed(n_points)
   type(pybridge_channel) :: channel
   type(pybridge_request) :: request
   integer :: status

   observed = 0
   if (command_argument_count() >= 1) call read_observations(observed)

   status = pybridge_channel_open(channel, pybridge_declaration(n_params=3, n_residuals=n_points, &
                                                                capabilities=PYBRIDGE_CAP_RESIDUALS))
   do while (status == PYBRIDGE_OK)
      status = pybridge_channel_wait(channel, request)
      if (status /= PYBRIDGE_OK) exit
      if (request%params(1) <= 0 .or. request%params(1) > 1 .or. abs(request%params(2)) + abs(request%params(3)) > 3) then
         ! Outside the range the time step was chosen for: say so rather than return a blown-up field.
         status = pybridge_channel_reply_error(channel, "burgers: nu must lie in (0, 1] and |a| + |c| <= 3")
         cycle
      end if
      request%residuals = solve(request%params(1), request%params(2), request%params(3)) - observed
      status = pybridge_channel_reply_residuals(channel)
   end do
   if (status /= PYBRIDGE_CLOSED) write (error_unit, '(a)') "burgers: "//pybridge_channel_last_error(channel)
   call pybridge_channel_close(channel)
   if (status /= PYBRIDGE_CLOSED) error stop 1

contains

   function solve(nu, a, c) result(u)
      real(real64), intent(in) :: nu, a, c
      real(real64) :: u(n_points), stage(n_points)
      real(real64) :: dx
      integer :: i, steps, step
      dx = 2*pi/n_points
      u = [(c + a*sin((i - 1)*dx), i=1, n_points)]
      steps = nint(t_end/dt)
      do step = 1, steps
         stage = u + dt*rate(u, nu, dx)
         u = 0.5_real64*(u + stage + dt*rate(stage, nu, dx))
      end do
   end function solve

   ! du/dt = -(u^2/2)_x + nu u_xx, periodic.
   function rate(u, nu, dx) result(dudt)
      real(real64), intent(in) :: u(n_points), nu, dx
      real(real64) :: dudt(n_points), left(n_points), right(n_points)
      right = cshift(u, 1)
      left = cshift(u, -1)
      dudt = -(right**2 - left**2)/(4*dx) + nu*(right - 2*u + left)/dx**2
   end function rate

   subroutine read_observations(values)
      real(real64), intent(out) :: values(n_points)
      character(len=4096) :: path
      integer :: unit, io
      call get_command_argument(1, path)
      open (newunit=unit, file=trim(path), status="old", action="read", iostat=io)
      if (io == 0) read (unit, *, iostat=io) values
      if (io /= 0) then
         write (error_unit, '(a)') "burgers: cannot read 64 observations from "//trim(path)
         error stop 2
      end if
      close (unit)
   end subroutine read_observations

end program burgers
