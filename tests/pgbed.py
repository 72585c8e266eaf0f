"""The test bed's cluster manager lives in :mod:`pgmarina.contrib.embedded`.

``pgmarina demo`` needs the same throwaway clusters as the tests, so there is
one implementation, in the package; ``import pgbed`` is that module.
"""

import sys

from pgmarina.contrib import embedded

sys.modules[__name__] = embedded
