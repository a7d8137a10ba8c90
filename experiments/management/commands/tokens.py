"""``skydeck tokens create|revoke|list``: API tokens (``Authorization: Token <key>``).

``create`` prints only the key on stdout, so ``TOKEN=$(skydeck tokens create alice)`` works.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from experiments.services import READ_ONLY_GROUP


class Command(BaseCommand):
    help = "Create, revoke and list API tokens (one per user)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{create,revoke,list}")
        create = sub.add_parser("create", help="print USERNAME's token, creating it if needed")
        create.add_argument("username")
        create.add_argument(
            "--rotate", action="store_true", help="replace an existing token with a new one"
        )
        create.add_argument(
            "--create-user",
            action="store_true",
            help="create USERNAME first if it does not exist (no password: API only)",
        )
        create.add_argument(
            "--read-only",
            action="store_true",
            help=f'put USERNAME in the "{READ_ONLY_GROUP}" group (may read, not write)',
        )
        revoke = sub.add_parser("revoke", help="delete USERNAME's token")
        revoke.add_argument("username")
        sub.add_parser("list", help="list users with a token (keys are shortened)")

    def handle(self, *args, **options) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _user(self, username: str, create: bool = False):
        User = get_user_model()
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            if not create:
                raise CommandError(
                    f"no user {username!r}: create it first (skydeck createsuperuser, the admin, "
                    "or tokens create --create-user)"
                ) from None
        user = User(**{User.USERNAME_FIELD: username})
        user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
        self.stderr.write(f"created user {username} (no password: API only)")
        return user

    def _create(self, options) -> None:
        user = self._user(options["username"], create=options["create_user"])
        if options["read_only"]:
            group, _ = Group.objects.get_or_create(name=READ_ONLY_GROUP)
            user.groups.add(group)
            self.stderr.write(f"{user.get_username()} is read-only")
        if options["rotate"]:
            Token.objects.filter(user=user).delete()
        token, created = Token.objects.get_or_create(user=user)
        self.stderr.write(
            f"{'new' if created else 'existing'} token for {user.get_username()} "
            "(send it as the header 'Authorization: Token <key>'):"
        )
        self.stdout.write(token.key)

    def _revoke(self, options) -> None:
        user = self._user(options["username"])
        deleted, _ = Token.objects.filter(user=user).delete()
        if not deleted:
            raise CommandError(f"{user.get_username()} has no token")
        self.stdout.write(f"revoked the token of {user.get_username()}")

    def _list(self, options) -> None:
        tokens = Token.objects.select_related("user").order_by("user__username")
        if not tokens:
            self.stdout.write("no tokens")
            return
        for token in tokens:
            read_only = token.user.groups.filter(name=READ_ONLY_GROUP).exists()
            self.stdout.write(
                f"{token.user.get_username()}\t{token.key[:6]}…\t"
                f"created {token.created:%Y-%m-%d %H:%M}\t"
                f"{'read-only' if read_only else 'read-write'}"
            )
