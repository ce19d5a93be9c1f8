"""DAVIS runs (eval_davis.py, eval_davis_2016.py): each video's job, the run, the J&F scoring."""
import os

from pipeline.runner import run_videos
from pipeline.video import VideoJob


def davis_job(dataset, name, output, log_folder=None):
    """The VideoJob of DAVIS video `name`: its first annotation, masks into <output>/<name>."""
    video = dataset.video(name)
    labels, _ = video.check()
    return VideoJob(name, video.frames, {0: labels}, os.path.join(output, name), frame_names=video.frame_names,
                    frame_count=len(video), log_folder=log_folder, log_name=name)


def segment_davis(dataset, options, setup):
    """Segments every video of `dataset` not complete in setup.output; returns the skipped {video: problem}."""
    log_folder = os.path.join(setup.output, 'memory_log') if options.save_memory_log else None
    _, skipped = run_videos(dataset.videos, lambda name: davis_job(dataset, name, setup.output, log_folder),
                            options, setup)
    return skipped


def evaluate_outputs(davis_root, output, image_set, single_object, sequences, sparse=False):
    """Scores what was just written (J&F, official protocol); CSVs go next to the masks."""
    from util.davis_metrics import evaluate_davis, print_results, write_csvs
    evaluation = evaluate_davis(davis_root, output, image_set, single_object, sequences=sequences, sparse=sparse)
    print_results(evaluation)
    print('wrote ' + ' and '.join(write_csvs(evaluation, output)))
