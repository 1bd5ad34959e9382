"""How Django's request log reads: client errors at INFO, and paths as they were requested.

Django's `django.request` logger reports every 4xx at WARNING ("Not Found: ..."), so an
unknown message id a client asked for looks like something to act on, and the real ones
(5xx at ERROR) drown. A 4xx is the client's business: it is logged at INFO. Django also logs
the decoded path, in which `/queues/a%2Fb%2Fc%2Forders/...` reads `/queues/a/b/c/orders/...`,
a different URL on these APIs (meshsite/middleware.py); the raw path is logged instead.
"""

from __future__ import annotations

import logging

from meshsite.middleware import raw_request_path


class RequestLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and isinstance(record.args, tuple):
            path, raw = getattr(request, "path", None), raw_request_path(request)
            record.args = tuple(raw if arg == path else arg for arg in record.args)
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
            # The record was made because WARNING was enabled; INFO may not be.
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True
