"""The fault suite: the live layer against real processes (daphne, Redis, MariaDB) made to
misbehave on 127.0.0.1. Each test is bounded in time and stops what it started."""
