! A minimal simulator for the consumer matrix, in Fortran: 3 parameters, cost = sum of squares.
program sim
   use, intrinsic :: iso_fortran_env, only: error_unit
   use pybridge
   implicit none
   type(pybridge_channel) :: channel
   type(pybridge_request) :: request
   integer :: status
   status = pybridge_channel_open(channel, pybridge_declaration(n_params=3))
   do while (status == PYBRIDGE_OK)
      status = pybridge_channel_wait(channel, request)
      if (status /= PYBRIDGE_OK) exit
      status = pybridge_channel_reply(channel, sum(request%params**2))
   end do
   if (status /= PYBRIDGE_CLOSED) write (error_unit, '(a)') pybridge_channel_last_error(channel)
   call pybridge_channel_close(channel)
   if (status /= PYBRIDGE_CLOSED) error stop 1
end program sim
