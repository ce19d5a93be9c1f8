"""YouTube-VOS runs (eval_youtube.py, eval_lvos.py): each video's job, the run (the server's zip:
util/submission.py)."""
import os

import progressbar

from pipeline.runner import run_videos
from pipeline.video import VideoJob


def youtube_job(dataset, name, annotations, log_folder=None):
    """The VideoJob of YouTube-VOS video `name`: objects entering on any annotated frame, masks with
    the original ids and the dataset's palette for the listed frames, into <annotations>/<name>."""
    video = dataset.video(name)
    return VideoJob(name, video.frames, video.labels, os.path.join(annotations, name),
                    frame_names=video.frame_names, frame_count=len(video.frame_names),
                    written=set(video.written_frames), palette=video.palette, num_objects=len(video.objects()),
                    log_folder=log_folder, log_name=name)


def segment_youtube(dataset, options, setup, log_folder=None):
    """Segments every video not complete in setup.output (the Annotations folder); returns
    ({video: written frames}, {video: problem} of the skipped ones)."""
    # every video is opened (annotations read and checked) before any compute: bad input fails fast
    return run_videos(dataset.videos, lambda name: youtube_job(dataset, name, setup.output, log_folder), options,
                      setup, checking=lambda names: progressbar.progressbar(names, prefix='checking videos '))
