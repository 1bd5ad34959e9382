"""`manage.py meshseed`: the default subaccount and, on a database without a superuser, an
`admin` whose generated password is printed once and kept in `$MESH_VAR_DIR/admin-password`.

The password is printed before it is written anywhere: it exists nowhere else, so a file that
cannot be written (no var directory under production settings) must not lose it."""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from ...services import subaccount_default

RESET_HINT = "forgot it? set a new one with `manage.py changepassword admin`"


class Command(BaseCommand):
    help = "Create the default subaccount with its entitlements and, once, an admin user"

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        subaccount = subaccount_default()
        password_file = settings.VAR_DIR / "admin-password"
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self._create_admin(password_file)
        self.stdout.write(f"Subaccount {subaccount.name!r} is ready.")
        login = f"Log in to the cockpit at {settings.MESH_PUBLIC_URL}/ (the Django admin: /admin/)"
        if password_file.exists():
            self.stdout.write(f"{login} as 'admin' with the password in {password_file} ({RESET_HINT})")
        else:
            self.stdout.write(f"{login} with your superuser account ({RESET_HINT})")

    def _create_admin(self, password_file: Path) -> None:
        password = secrets.token_urlsafe(12)
        get_user_model().objects.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(f"Created the superuser 'admin' with password {password}")
        self.stdout.flush()
        try:
            _keep_secret(password_file, password)
        except OSError as error:
            self.stderr.write(f"Could not keep the password in {password_file} ({error.strerror}); "
                              "note it now, it is not shown again")


def _keep_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only from the start, not chmod-ed after a world-readable moment.
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(secret + "\n")
