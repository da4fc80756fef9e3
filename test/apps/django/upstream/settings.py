"""Settings of the Django upstream app the differential security tests put
behind totpgate. Environment:

  DJANGO_DB    path of the SQLite database (required; the test gives one
               in its temporary directory)
  LOGIN_MODE   regenerate (default): Django's stock login, which cycles the
               session key; inplace: the login is written into the session
               the client already had (session fixation, on purpose)
  USER_HEADER  1: answers of an authenticated request carry X-User-Id
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# A fixed key: this is a test fixture, never deployed.
SECRET_KEY = "totpgate-test-django-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["*"]

LOGIN_MODE = os.environ.get("LOGIN_MODE", "regenerate")
if LOGIN_MODE not in ("regenerate", "inplace"):
    raise SystemExit(f"LOGIN_MODE must be regenerate or inplace, not {LOGIN_MODE}")
USER_HEADER = os.environ.get("USER_HEADER") == "1"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
]

MIDDLEWARE = [
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",  # APPEND_SLASH stays True
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "upstream.middleware.UserHeaderMiddleware",
]

ROOT_URLCONF = "upstream.urls"
WSGI_APPLICATION = "upstream.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB") or str(BASE_DIR.parent / "upstream.sqlite3"),
    },
}

# Salted MD5 instead of PBKDF2's many rounds, as Django's docs advise for
# tests: each start creates ten users and the tests log in a lot. What the
# hash costs changes nothing the tests look at.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_REDIRECT_URL = "/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    # One line a request (runserver's log) goes to stderr too.
    "loggers": {"django.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
