"""Settings of the test project: the database comes from the environment.

PGM_DJ_HOST, PGM_DJ_PORT, PGM_DJ_USER, PGM_DJ_PASSWORD, PGM_DJ_NAME: the server.
PGM_DJ_TEST_NAME: the test database Django creates (unique per run).
"""

import os

SECRET_KEY = "test-only, not a secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "djproject.urls"
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["django.contrib.contenttypes", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE: list[str] = []

_SERVER = {
    "ENGINE": "pgmarina.contrib.django",
    "HOST": os.environ["PGM_DJ_HOST"],
    "PORT": os.environ["PGM_DJ_PORT"],
    "USER": os.environ["PGM_DJ_USER"],
    "PASSWORD": os.environ.get("PGM_DJ_PASSWORD", ""),
    "NAME": os.environ["PGM_DJ_NAME"],
    "CONN_MAX_AGE": 0,
    "TEST": {"NAME": os.environ["PGM_DJ_TEST_NAME"]},
}

DATABASES = {
    # The pool checks each connection it hands out: CONN_HEALTH_CHECKS.
    "default": {
        **_SERVER,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "application_name": "pgm-default",
            "pool": {"min_size": 1, "max_size": 4, "timeout": 10},
        },
    },
    # The same database, one connection at most and a short wait: for the
    # pool timeout.
    "tight": {
        **_SERVER,
        "TEST": {"MIRROR": "default"},
        "OPTIONS": {
            "application_name": "pgm-tight",
            "pool": {"min_size": 0, "max_size": 1, "timeout": 0.5},
        },
    },
}
