"""Building needs only the Debian packages: a plain `make` never runs
Maven, however slow or broken Maven is (the Kafka jars are fetched only
by the targets that start a broker)."""

import os
import stat
import subprocess

import harness


def test_make_builds_without_maven(tmp_path):
    marker = tmp_path / "mvn-called"
    mvn = tmp_path / "mvn"
    mvn.write_text("#!/bin/sh\ntouch %s\nexit 1\n" % marker)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ)
    env["MVN"] = str(mvn)
    env["PATH"] = "%s:%s" % (tmp_path, env["PATH"])
    # Jars that are not there: a fetch would have to ask Maven.
    env["KAFKA_LIB_DIR"] = str(tmp_path / "no-jars")
    # The build's own files: the suite's binaries are not touched.
    build = tmp_path / "build"
    p = subprocess.run(
        ["make", "-C", harness.REPO, "-j2", "BUILD=%s" % build,
         "BIN=%s" % (build / "bin"), "all"],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not marker.exists(), "make all ran Maven:\n" + p.stderr[-3000:]
    assert (build / "bin" / "sluice").exists()
