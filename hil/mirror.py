"""The Debian package mirror, read from the host's own apt configuration at run time.

The repository names no host: whatever apt on this machine uses for Debian 12
(bookworm) is what debootstrap and the image's apt use while the image is built. For
a release this machine's apt has no source for (trixie on a bookworm host), the same
mirrors with that release's suites.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    uri: str  # e.g. the mirror's URL, ending in "/"
    suite: str  # bookworm, bookworm-updates, bookworm-security
    component: str


def debian_sources(codename: str = "bookworm") -> list[Source]:
    """The host's apt sources for this Debian release (main component), in apt's order;
    for a release it has none for, its sources for another release, renamed."""
    result = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(CODENAME) $(COMPONENT)",
         "Created-By: Packages"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"apt-get indextargets failed: {result.stderr.strip()}")
    by_release: dict[str, list[Source]] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[2] != "main":
            continue
        uri, suite, component = parts
        release = suite.split("-")[0]  # bookworm-updates, bookworm-security: bookworm
        source = Source(uri if uri.endswith("/") else uri + "/", suite, component)
        if source not in by_release.setdefault(release, []):
            by_release[release].append(source)
    if codename in by_release:
        return by_release[codename]
    for release, sources in by_release.items():
        if any(s.suite == release for s in sources):  # a Debian release, not a PPA's
            return [Source(s.uri, codename + s.suite.removeprefix(release), s.component)
                    for s in sources]
    return []


def main_mirror(codename: str = "bookworm") -> str:
    """The mirror that carries the release itself (not -updates, not -security)."""
    for source in debian_sources(codename):
        if source.suite == codename:
            return source.uri
    raise RuntimeError(
        f"this machine's apt has no source for Debian {codename}: add one "
        "(/etc/apt/sources.list.d/) and run apt-get update"
    )


def sources_list(codename: str = "bookworm") -> str:
    """A sources.list for the image while it is built: the host's sources for the release."""
    return "".join(f"deb {s.uri} {s.suite} {s.component}\n" for s in debian_sources(codename))
