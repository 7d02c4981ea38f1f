"""The driver's machinery below the public API, one job per module.

- :mod:`.channel`: the OS objects of one channel (segment, semaphores), the handshake, requests.
- :mod:`.process`: a launched simulator as a session of processes: start, liveness, stop.
- :mod:`.policy`: what an evaluation does when it fails (restart, penalty, raise).
- :mod:`.cleanup`: finding and removing what dead drivers left in ``/dev/shm``.

Nothing here imports from the layers above (``simulator``, ``cli``).
"""
