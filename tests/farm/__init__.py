"""Tests of build farms: the REAPI remote cache, remote execution and the worker (``backend.farm``)."""
