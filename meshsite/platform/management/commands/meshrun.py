"""`make run`: the whole mesh in the foreground, on whatever the settings point at.

Migrates, seeds, then runs Daphne (HTTP + WebSocket) and a Celery worker with the beat
scheduler embedded as child processes. Ctrl-C (or SIGTERM) stops all of them; if either
child dies, the other is stopped too so nothing half-runs unnoticed.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Migrate, seed and run Daphne plus a Celery worker (with beat) in the foreground"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("meshseed")
        bin_dir = os.path.dirname(sys.executable)
        children = [
            subprocess.Popen([os.path.join(bin_dir, "daphne"), "-b", options["host"], "-p", str(options["port"]),
                              "meshsite.asgi:application"]),
            subprocess.Popen([os.path.join(bin_dir, "celery"), "-A", "meshsite", "worker", "--beat",
                              "--pool=threads", "--concurrency=4", "--loglevel=INFO",
                              "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]),
        ]
        self.stdout.write(f"meshsite is running on http://{options['host']}:{options['port']} (Ctrl-C stops it)")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
