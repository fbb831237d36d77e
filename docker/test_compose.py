#!/usr/bin/env python3
"""Tests of docker/compose.yaml, run by .ci/test: the file is valid against the Compose
specification as docker-compose validates it (`docker-compose config`, which needs no Docker
daemon), and every xmppd service runs a command the binary has, with documented settings."""

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
XMPPD = Path(os.environ.get("XMPPD_BIN", TARGET / "debug" / "xmppd"))


class Compose(unittest.TestCase):
    def test_the_file_is_valid_compose(self):
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_wrong_file_is_refused(self):
        """The check can fail: a condition the specification does not know."""
        broken = COMPOSE.read_text().replace("service_completed_successfully", "service_done", 1)
        result = subprocess.run(["docker-compose", "-f", "-", "config", "-q"], input=broken,
                                capture_output=True, text=True, cwd=COMPOSE.parent)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("service_done", result.stderr)

    def test_every_xmppd_service_runs_a_command_of_the_binary_with_documented_settings(self):
        services = yaml.safe_load(COMPOSE.read_text())["services"]
        documented = set(re.findall(r"`(XMPPD_[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
        roles = {name: s for name, s in services.items() if s.get("image", "").startswith("xmppd:")}
        self.assertEqual(set(roles), {"certs", "migrate", "session", "router", "connection-manager"})
        for name, service in roles.items():
            for variable in service.get("environment", {}):
                self.assertIn(variable, documented, name)
            if service.get("entrypoint"):
                continue
            command = service["command"][0]
            result = subprocess.run([str(XMPPD), command, "--help"], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, f"{name}: xmppd {command}: {result.stderr}")


if __name__ == "__main__":
    sys.exit(unittest.main())
