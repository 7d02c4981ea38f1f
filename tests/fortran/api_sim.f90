! Exercises the rest of the Fortran module: batches (costs), gradients, reported failures, the
! channel's name and the library's version. Cost sum(x**2), gradient 2x; a vector with x(1) < 0 fails.
program api_sim
   use, intrinsic :: iso_fortran_env, only: error_unit
   use pybridge
   implicit none
   type(pybridge_channel) :: channel
   type(pybridge_request) :: request
   integer :: status, i, n
   character(len=:), allocatable :: name

   status = pybridge_channel_open(channel, pybridge_declaration(n_params=3, capabilities=PYBRIDGE_CAP_GRADIENT, &
                                                                max_batch=4))
   name = pybridge_channel_name(channel)
   do while (status == PYBRIDGE_OK)
      status = pybridge_channel_wait(channel, request)
      if (status /= PYBRIDGE_OK) exit
      n = request%n_params
      if (request%params(1) < 0) then
         status = pybridge_channel_reply_error(channel, "negative x(1) on "//name//" (shim "//pybridge_version()//")")
         cycle
      end if
      if (request%count == 1 .and. .not. associated(request%costs)) then
         if (request%kind == PYBRIDGE_REQUEST_GRADIENT) request%gradient = 2*request%params
         status = pybridge_channel_reply(channel, sum(request%params**2))
      else
         do i = 1, request%count
            request%costs(i) = sum(request%params((i - 1)*n + 1:i*n)**2)
         end do
         if (request%kind == PYBRIDGE_REQUEST_GRADIENT) request%gradient = 2*request%params
         status = pybridge_channel_reply_batch(channel)
      end if
   end do
   if (status /= PYBRIDGE_CLOSED) write (error_unit, '(a)') pybridge_channel_last_error(channel)
   call pybridge_channel_close(channel)
   if (status /= PYBRIDGE_CLOSED) error stop 1
end program api_sim
