# A minimal simulator for the consumer matrix, in Python: 3 parameters, cost = sum of squares.
import numpy as np

import pybridge

pybridge.serve(lambda x: float(np.dot(x, x)), n_params=3)
