#!/usr/bin/env python3
"""Start the Django upstream app: migrate the SQLite database named by
DJANGO_DB, create the users alice..judy (password "pw"), then serve on
127.0.0.1:$PORT with Django's threaded HTTP/1.1 server (runserver without
the reloader). Prints "listening PORT" once the socket is bound."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "upstream.settings")

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
PASSWORD = "pw"


def main():
    port = int(os.environ["PORT"])
    if not os.environ.get("DJANGO_DB"):
        raise SystemExit("DJANGO_DB must name the SQLite file")

    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer, run
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0, interactive=False)
    pw = make_password(PASSWORD)
    for name in USERS:
        User.objects.update_or_create(username=name, defaults={"password": pw})

    # What `runserver --noreload 127.0.0.1:PORT` does (threaded WSGIServer,
    # HTTP/1.1 keep-alive when the answer has a length), with a ready line
    # printed after the bind instead of runserver's banner before it.
    class Server(WSGIServer):
        def server_activate(self):
            super().server_activate()
            print(f"listening {port}", flush=True)

    run("127.0.0.1", port, get_wsgi_application(), threading=True, server_cls=Server)


if __name__ == "__main__":
    main()
