"""The ``tracking`` section of the configuration: how detections become tracks and which tracks are masked
(``anonray/track/tracker.py``). ``anonray.config.Config`` holds it as ``tracking``; the reasons behind each
default are measured in models/README.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from anonray.config_base import StrictModel


class ClassTracking(StrictModel):
    """Tracking and gap filling for one class (counts are frames)."""

    match_iou: float = Field(0.2, ge=0.0, lt=1.0, description="Minimum IoU to continue a track.")
    track_threshold: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Score that confirms a track (masked over its whole life once one detection reaches it); "
        "weaker detections (down to the detection threshold) continue tracks and start tentative ones. "
        "0 = every detection confirms.")
    small_track_threshold: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="Score that confirms a track for detections up to small_track_height px tall, ramping "
        "linearly to track_threshold at large_track_height (small targets score lower). None = "
        "track_threshold at every size.")
    small_track_height: int = Field(24, ge=1, description="Height (px) up to which small_track_threshold applies.")
    large_track_height: int = Field(64, ge=1, description="Height (px) from which track_threshold applies.")
    weak_match_iou: float = Field(0.3, ge=0.0, lt=1.0, description="Minimum IoU for a weak detection.")
    max_gap: int = Field(8, ge=0, description="Frames a track survives without detections (gaps filled).")
    pre_roll: int = Field(3, ge=0, description="Frames masked before a track's first detection.")
    post_roll: int = Field(3, ge=0, description="Frames masked after a track's last detection.")
    min_hits: int = Field(1, ge=1, description="Detections before a track is masked.")
    low_score_min_hits: int = Field(
        1, ge=1,
        description="Detections before a track whose best score stays under track_threshold is masked (one "
        "confirmed by small_track_threshold, a person under it or weak_track_hits): a false look on texture "
        "rarely lasts. A track that reached track_threshold is confirmed by min_hits alone.")
    weak_track_hits: int = Field(
        0, ge=0,
        description="A track whose detections all stay below track_threshold is masked (over its whole life) "
        "once it has at least this many detections; 0 = only a strong detection confirms a track.")
    smoothing: float = Field(0.5, ge=0.0, lt=1.0, description="Exponential smoothing weight of old box.")
    motion_buffer: float = Field(
        0.0, ge=0.0, le=4.0,
        description="A last association stage, at match_iou, for the strong detections left unmatched and the "
        "tracks seen within motion_buffer_gap frames: IoU of the boxes grown by this share of their width and "
        "height on every side (buffered IoU), so an object that moved further than its size between two looks "
        "still continues its track. 0 = off.")
    motion_buffer_gap: int = Field(
        1, ge=1, description="The motion_buffer stage continues only tracks last seen at most this many frames "
        "before (never fewer than the class's detection stride: one look), and only with detections that "
        "confirm a track.")
    roll_follows_motion: bool = Field(
        False,
        description="Pre- and post-roll frames carry the box along the track's velocity at that end (measured "
        "over 6 frames or more where the track lasts that long, and only where at least 3 looks lie within a "
        "quarter of the box's size of that straight path) instead of holding it where the object was "
        "last seen; where that motion (1% of the box and 0.5 px a frame or faster) takes the box to the "
        "frame's border within max_gap frames, the roll lasts until it has left (at most max_gap frames): "
        "detectors lose an object half out of view.")

    @model_validator(mode="after")
    def _track_heights_ordered(self) -> ClassTracking:
        if self.large_track_height < self.small_track_height:
            raise ValueError("large_track_height must be at least small_track_height")
        return self


class PlateTracking(ClassTracking):
    # Measured on the labelled real footage (models/README.md): plates of signs, grilles and windscreens score
    # up to 0.5 on a few frames; a plate scored 0.5 once, or weakly on 3 detections, is masked over its whole
    # track (a strong one is never dropped).
    track_threshold: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="Score that confirms a track (see ClassTracking).")
    weak_track_hits: int = Field(
        3, ge=0,
        description="A track whose detections all stay below track_threshold is masked (over its whole life) "
        "once it has at least this many detections; 0 = only a strong detection confirms a track.")
    # A class default, so that a partial tracking.plate section keeps it.
    match_iou: float = Field(0.15, ge=0.0, lt=1.0, description="Minimum IoU to continue a track.")
    # Plates are found on fewer frames than faces (every 3rd, and in the dark only now and then): tracks that
    # bridge 25 frames and mask 8 frames past the last sighting (chosen on five clip sets, models/README.md).
    max_gap: int = Field(25, ge=0, description="Frames a track survives without detections (gaps filled).")
    post_roll: int = Field(8, ge=0, description="Frames masked after a track's last detection.")
    pre_roll: int = Field(5, ge=0, description="Frames masked before a track's first detection.")
    # Plates are looked at every 3rd frame: a car crossing the view moves 2-4 plate heights between two looks
    # (car_park_topdown). Without this stage each sighting was a track of its own, masked 13 frames where the
    # plate no longer was (models/README.md, "Moving plates").
    motion_buffer: float = Field(
        2.0, ge=0.0, le=4.0,
        description="A last association stage, at match_iou, for the strong detections left unmatched and the "
        "tracks seen within motion_buffer_gap frames: IoU of the boxes grown by this share of their width and "
        "height on every side (buffered IoU), so an object that moved further than its size between two looks "
        "still continues its track. 0 = off.")
    motion_buffer_gap: int = Field(
        3, ge=1, description="The motion_buffer stage continues only tracks last seen at most this many frames "
        "before (never fewer than the class's detection stride: one look), and only with detections that "
        "confirm a track.")
    # roll_follows_motion stays off for plates too: it took synthetic seed 1000's plate miss from 8.2% to 2.4% (a
    # plate leaving the view at night), but on speech_face_360p it flung false plate tracks' masks across the
    # frame (velocities of linked false looks). It follows only steady motion since (tracker.STEADY_OFFSET), and
    # then still rolls false plate tracks along the camera's pan there (about 3% more blobs a frame on that
    # clip): models/README.md, "Moving plates". Opt in per run.


class FaceTracking(ClassTracking):
    # Measured on the labelled real footage and the synthetic clip sets (models/README.md): false faces on
    # crests, hands, shirts and chairs score up to about 0.4 over their whole track, real faces of 64 px and
    # more reach more; small real faces score as low as the false ones. With people detected (alone_track_
    # threshold) a small track is confirmed from 0.1 (24 px and under, ramping to 0.4 at 40 px) where a person
    # stands under it, and needs 0.4 elsewhere.
    # Weak detections still extend a track (fewer gaps; a face first seen small is masked from its first frame
    # once confirmed).
    track_threshold: float = Field(
        0.4, ge=0.0, lt=1.0,
        description="Score that confirms a track (see ClassTracking).")
    small_track_threshold: float | None = Field(
        0.1, ge=0.0, lt=1.0,
        description="Score that confirms a track of small faces (see ClassTracking).")
    large_track_height: int = Field(40, ge=1, description="Height (px) from which track_threshold applies.")
    # Measured on the labelled real footage (models/README.md): the small-face thresholds above hold where a
    # person detection has the face at its head end; a weak face nobody stands under (a crest, a mirror, a
    # sign) needs what a large face needs.
    alone_track_threshold: float | None = Field(
        0.4, ge=0.0, lt=1.0,
        description="Score that confirms a face track no person supports (detection.person): where people were "
        "looked for and none has the track at its head end, one detection must reach this score, whatever the "
        "track's size. None = no person check (then the small-face thresholds above apply alone: 0.2 and 64 px "
        "were the defaults without it).")
    # Measured on the labelled real footage and the synthetic sets (models/README.md, "Alone faces seen once or
    # twice"): a wing mirror or the street's crest is a long track that peaks at 0.4-0.45 on one or two looks out
    # of dozens; a real face nobody stands under reaches the same score on more of its looks, or scores higher.
    # One in ten since the crowd rule below: the same mirror peaked on 3 of 40 looks under another machine's int8
    # calibration, and the crowd faces the stricter share unmasks are confirmed by their neighbours.
    alone_repeat_share: float = Field(
        0.1, ge=0.0, le=1.0,
        description="Where no person supports a face track and its best score lies between alone_track_threshold "
        "and alone_sure_threshold, at least this share of its detections must reach alone_track_threshold (one "
        "in ten: a track of up to 10 detections needs one, of 58 six). 0 = one detection is enough.")
    alone_sure_threshold: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="Score from which a face track no person supports is confirmed by one detection, however "
        "long the track (alone_repeat_share does not apply): a face seen this strong is never unmasked.")
    # Measured on the labelled real footage and the synthetic sets (models/README.md, "Brief low-scored
    # faces"): false faces under a person (a shoulder, a hand) come and go in 1-3 detections; real small faces
    # last. 4 detections: tuning precision 0.73 -> 0.75, synthetic seeds 0 and 1000 no worse.
    low_score_min_hits: int = Field(
        4, ge=1,
        description="Detections before a track whose best score stays under track_threshold is masked (see "
        "ClassTracking).")
    # Measured on the synthetic crowds and the labelled real footage (models/README.md, "Faces in a crowd"):
    # small faces in a crowd score as low as texture and few have a person box under them; their neighbours do.
    crowd_neighbours: int = Field(
        3, ge=0,
        description="A face track not confirmed by its own scores or a person is confirmed when at least this "
        "many confirmed face tracks of about its height (within 1.5x) sit beside it (crowd_reach, crowd_rise) on "
        "crowd_share of its detections, and it has crowd_min_hits detections (track/crowd.py). 0 = off.")
    crowd_reach: float = Field(8.0, gt=0.0, description="How far sideways a neighbour may sit, in face heights.")
    crowd_rise: float = Field(1.0, ge=0.0, description="How far up or down a neighbour may sit, in face heights.")
    crowd_share: float = Field(0.5, gt=0.0, le=1.0,
                               description="Share of a track's detections that must have crowd_neighbours.")
    crowd_min_hits: int = Field(4, ge=1, description="Detections a track needs before a crowd confirms it.")
    # Measured on the synthetic sets and the labelled real footage (models/README.md, "Faces in a crowd"): in noise
    # the detector's box jumps in size and one face becomes two tracks, one of them never confirmed.
    fragment_iou: float = Field(
        0.3, ge=0.0, lt=1.0,
        description="A face track of low_score_min_hits detections or more whose box overlaps a confirmed face track "
        "at this IoU (on its frame or the next or previous one) on fragment_share of its detections is a piece of "
        "that face and is masked too (track/crowd.py). 0 = off.")
    fragment_share: float = Field(
        0.3, gt=0.0, le=1.0, description="Share of a track's detections that must overlap a confirmed face.")
    # Longer gaps and roll for faces: measured on the accuracy harness (fewer misses, less flicker).
    max_gap: int = Field(15, ge=0, description="Frames a track survives without detections (gaps filled).")
    pre_roll: int = Field(5, ge=0, description="Frames masked before a track's first detection.")
    post_roll: int = Field(5, ge=0, description="Frames masked after a track's last detection.")


class TrackingConfig(StrictModel):
    face: FaceTracking = FaceTracking()
    plate: PlateTracking = PlateTracking()
    scene_cut_threshold: float = Field(
        30.0, ge=0.0, le=255.0,
        description="Mean change of a 4x4 thumbnail (0..255) that marks a scene cut; 0 = never cut.")
