import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from ...services import subaccount_default


class Command(BaseCommand):
    help = "Create the default subaccount with its entitlements and, once, an admin user"

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        subaccount = subaccount_default()
        user_model = get_user_model()
        password_file = settings.VAR_DIR / "admin-password"
        if not user_model.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "admin@localhost", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            self.stdout.write(f"Created the superuser 'admin' with password {password}")
        self.stdout.write(f"Subaccount {subaccount.name!r} is ready.")
        if password_file.exists():
            self.stdout.write(
                f"Log in at {settings.MESH_PUBLIC_URL}/admin/ as 'admin' with the password in {password_file}"
            )
        else:
            self.stdout.write(f"Log in at {settings.MESH_PUBLIC_URL}/admin/ with your superuser account")
