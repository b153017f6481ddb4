"""Layout of IDT descriptors and rows: the cells and bins of each descriptor type, and the columns of one row
(trajectory fields, trajectory shape, then HOG, HOF, MBHx and MBHy)."""

from __future__ import annotations

from dataclasses import dataclass

N_TRAJECTORY_FIELDS = 10
"""Leading columns of a row: frame, mean x, mean y, std x, std y, length, scale, x_pos, y_pos, t_pos."""
DESCRIPTOR_TYPES = ("hog", "hof", "mbhx", "mbhy")


@dataclass(frozen=True)
class DescriptorLayout:
    """Geometry of the descriptors: ``bins`` per type (HOG, HOF, MBHx, MBHy), the patch and its cells."""

    orientation_bins: int
    patch_size: int
    nxy_cell: int
    nt_cell: int
    track_length: int

    @property
    def bins(self) -> tuple[int, int, int, int]:
        return (
            self.orientation_bins,
            self.orientation_bins + 1,
            self.orientation_bins,
            self.orientation_bins,
        )

    @property
    def n_planes(self) -> int:
        return sum(self.bins)

    @property
    def frame_dim(self) -> int:
        """Length of one frame's descriptor vector (all types, all spatial cells)."""
        return self.n_planes * self.nxy_cell**2

    @property
    def frames_per_cell(self) -> int:
        """Frames averaged per temporal cell (the reference's floor(track_length / nt_cell))."""
        return self.track_length // self.nt_cell

    @property
    def type_dims(self) -> tuple[int, ...]:
        """Output columns per descriptor type (e.g. 96, 108, 96, 96)."""
        return tuple(b * self.nxy_cell**2 * self.nt_cell for b in self.bins)


@dataclass(frozen=True)
class IdtColumns:
    """Where each descriptor type lies in a row, given the track length and the sizes of HOG, HOF, MBHx and
    MBHy; the defaults are the reference's 436 columns (10 + 30 + 96 + 108 + 96 + 96)."""

    track_length: int = 15
    type_dims: tuple[int, int, int, int] = (96, 108, 96, 96)

    @property
    def row_dim(self) -> int:
        return N_TRAJECTORY_FIELDS + 2 * self.track_length + sum(self.type_dims)

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Half-open column range of each type: trajectory (shape), hog, hof, mbhx, mbhy, and mbh (both)."""
        start = N_TRAJECTORY_FIELDS + 2 * self.track_length
        ranges = {"trajectory": (N_TRAJECTORY_FIELDS, start)}
        for name, dim in zip(DESCRIPTOR_TYPES, self.type_dims, strict=True):
            ranges[name] = (start, start + dim)
            start += dim
        ranges["mbh"] = (ranges["mbhx"][0], ranges["mbhy"][1])
        return ranges


REFERENCE_COLUMNS = IdtColumns()
"""The reference release's 436-column layout (track length 15, 2x2x3 cells, 8 orientation bins)."""
