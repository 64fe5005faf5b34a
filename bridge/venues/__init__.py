"""Every venue the bridge speaks, one line each.

A venue is a module (or package) here that declares its stream section: a subclass of
`bridge.sections.StreamBase` with the venue's own keys, its name as the `venue` tag, how to
build its pure `Venue` (`build_venue`) and what `bridge check` prints about it (`scope`). The
config, `bridge check`, secret masking and the simulators' choices all derive from this list;
adding a venue is its module plus one line below.
"""

from __future__ import annotations

from typing import Final, get_args

from bridge.sections import StreamBase
from bridge.venues.aquanow import AquanowStream
from bridge.venues.satori import SatoriStream

STREAM_TYPES: Final[tuple[type[StreamBase], ...]] = (
    AquanowStream,
    SatoriStream,
)


def venue_name(stream_type: type[StreamBase]) -> str:
    """The `venue` tag a stream section answers to (its `Literal`)."""
    (name,) = get_args(stream_type.model_fields["venue"].annotation)
    return str(name)


VENUES: Final = tuple(venue_name(t) for t in STREAM_TYPES)
