"""The tests run with ENVIRONMENT=test unless the environment says otherwise. Set here, before
any module reads the settings, so that the processes the tests start inherit it too: without
ENVIRONMENT the service is in production, which needs secrets the tests do not have."""

import os

os.environ.setdefault("ENVIRONMENT", "test")
