"""meshsite settings: a base plus one module per concern, all read from the environment.

With no variable set, the embedded default runs: SQLite under var/, the in-memory channel
layer and a file-system Celery broker, so `make run` needs no server.
"""

from .base import *  # noqa: F403
from .broker import *  # noqa: F403
from .cache import *  # noqa: F403
from .connectors import *  # noqa: F403
from .database import *  # noqa: F403
from .live import *  # noqa: F403
from .mesh import *  # noqa: F403
from .metrics import *  # noqa: F403
from .oauth import *  # noqa: F403
from .visibility import *  # noqa: F403
from .webhooks import *  # noqa: F403
