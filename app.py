"""A local web page to segment your own videos: choose one, mark the objects, watch them tracked.

    python app.py [--model saves/s012.pth] [--device cpu|cuda] [--amp] [--port 7860]

Then open http://127.0.0.1:7860. The page (docs/app.md) takes an mp4/mov/avi
or a zip of frames (or the bundled sample), lets you mark objects on any
frame with a brush or a box refined by GrabCut, segments the video with the
pipeline of every command line (pipeline/video.py over the `qdmn` API) and shows the overlay video, each frame's quality and
memory decision, the frames worth checking first, and the downloads.

Safe by default: it listens on 127.0.0.1 only; uploads and results live in a
private temporary folder removed at exit; uploads are capped in size and
length; one segmentation runs at a time (the others wait in a queue); the
page never names a server path.
"""
import argparse
import atexit
import functools
import heapq
import math
import os
import shutil
import signal
import tempfile
import warnings
import zipfile
from contextlib import closing
from dataclasses import dataclass, field

import cv2
import numpy as np

from datasets.video_reader import FOLDER_FPS, open_video
from pipeline.flags import add_model_arg, add_shrink_size_arg
from pipeline.video import Overlay, RunOptions, VideoJob, VideoRun
from qdmn import load_network
from util.cli import HelpFormatter, add_device_args
from util.device import resolve_device
from util.errors import UserInputError, run_main
from util.grabcut import box_to_mask
from util.image_io import read_label_mask
from util.labels import object_ids, reduced_short_side
from util.overlay import Mp4Writer, blend
from util.palette import DAVIS_PALETTE
from util.safe_zip import extract_flat

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'samples', 'judo.mp4')
VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi')
MAX_OBJECTS = 8         # brush colours offered: DAVIS palette entries 1..8
UNPACKED_PER_UPLOADED = 4   # a zip of frames may unpack to 4x its limit (JPEG frames barely compress)
CHECK_FIRST = 6         # lowest-quality frames shown under "check these"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_model_arg(parser)
    add_device_args(parser)
    add_shrink_size_arg(parser)
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on; anything but 127.0.0.1 lets other machines use the page')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--max_frames', type=int, default=1000, help='longest video accepted, in frames')
    parser.add_argument('--max_upload_mb', type=int, default=500, help='largest upload accepted, in MB')
    return parser.parse_args(argv)


@dataclass
class Limits:
    max_frames: int
    max_upload_mb: int


@dataclass
class Video:
    """The chosen video: what open_video reads, and how the page names it (never a server path)."""
    source: str
    name: str
    size: tuple
    num_frames: int
    fps: float
    marks: dict = field(default_factory=dict)      # frame index -> HxW uint8 label map
    history: list = field(default_factory=list)    # the marks before each change, for undo


def open_choice(path, name, folder, limits):
    """The upload or sample at `path` as a Video, checked against the limits; a zip is unpacked into `folder`.

    Errors name the file as the user knows it (`name`), never its server path.
    """
    frames = os.path.join(folder, 'frames')
    try:
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > limits.max_upload_mb:
            raise UserInputError(f'{path}: {size_mb:.0f} MB, more than the limit of {limits.max_upload_mb} MB')
        extension = os.path.splitext(path)[1].lower()
        if extension == '.zip':
            source = extract_flat(path, frames, max_files=limits.max_frames + 16,
                                  max_bytes=UNPACKED_PER_UPLOADED * limits.max_upload_mb * 2**20)
        elif extension in VIDEO_EXTENSIONS:
            source = path
        else:
            raise UserInputError(f'{path}: not a video ({", ".join(VIDEO_EXTENSIONS)}) or a zip of frames')
        video = open_video(source)
        if video.num_frames and video.num_frames > limits.max_frames:
            raise UserInputError(f'{path}: {video.num_frames} frames, more than the limit of {limits.max_frames}')
    except UserInputError as e:
        raise UserInputError(str(e).replace(frames, name).replace(path, name)) from None
    return Video(source, name, video.size, video.num_frames or 0, video.fps or FOLDER_FPS)


def read_frame(video, index):
    """HxWx3 uint8 RGB of frame `index` (decoded from the start: frames are read on demand, not kept)."""
    for i, (_, rgb) in enumerate(open_video(video.source)):
        if i == index:
            return rgb
    raise UserInputError(f'{video.name}: no frame {index} (the video has {i + 1})')


def marked_frame(video, index):
    """Frame `index` with its marks drawn in the objects' colours."""
    rgb = read_frame(video, index)
    return blend(rgb, video.marks[index]) if index in video.marks else rgb


def strokes_by_object(layer):
    """{object id: HxW bool} of the pixels painted in each object's palette colour on an HxWx4 RGBA layer.

    Each colour of the brush is one object (DAVIS palette entry k = object k);
    the soft edges of a stroke (alpha below half) are left out.
    """
    painted = layer[..., 3] >= 128
    colours = layer[..., :3][painted].astype(np.int32)
    palette = DAVIS_PALETTE[1:MAX_OBJECTS + 1].astype(np.int32)
    nearest = ((colours[:, None] - palette[None]) ** 2).sum(-1).argmin(1) + 1
    strokes = {}
    for k in np.unique(nearest):
        mask = np.zeros(painted.shape, bool)
        mask[painted] = nearest == k
        strokes[int(k)] = mask
    return strokes


def add_marks(video, index, layer, tool):
    """Paints the strokes of `layer` into frame `index`'s marks: as drawn ('brush'), or as the
    GrabCut mask of each object's stroke extent ('box': drag from one corner to the opposite one)."""
    strokes = strokes_by_object(layer)
    if not strokes:
        raise UserInputError('nothing drawn: paint over an object (or drag across it in box mode), then press Add')
    rgb = read_frame(video, index)
    labels = video.marks.get(index, np.zeros(video.size, np.uint8)).copy()
    for k, stroke in strokes.items():
        if tool == 'box':
            ys, xs = np.nonzero(stroke)
            stroke = box_to_mask(rgb, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        labels[stroke] = k
    video.history.append(dict(video.marks))
    video.marks[index] = labels


def undo(video):
    """Takes back the last Add or Clear."""
    if not video.history:
        raise UserInputError('nothing to undo')
    video.marks = video.history.pop()


def clear(video):
    video.history.append(dict(video.marks))
    video.marks = {}


def marks_summary(video):
    if not video.marks:
        return 'No object marked yet.'
    lines = []
    for index in sorted(video.marks):
        ids = object_ids(video.marks[index])
        lines.append(f'frame {index}: object{"s" if len(ids) > 1 else ""} {", ".join(map(str, ids))}')
    return 'Marked: ' + '; '.join(lines)


@dataclass
class Result:
    masks_dir: str          # <frame name>.png per frame
    overlay_webm: str       # VP8: what browsers play
    overlay_mp4: str        # mp4v, as segment_video.py writes
    masks_zip: str
    memory_log: list        # memory_log.csv and .png (util/memory_log.py)
    timeline: list          # (frame, name, mean quality or None, memory decision)
    check_first: list       # (overlay RGB, caption) of the lowest-quality frames, lowest first


def segment(video, network, size, folder, max_frames):
    """Segments `video` from its marks into `folder` with the pipeline (pipeline/video.py); yields the
    frames done, returns a Result.

    Objects marked on frame 0 only: the DAVIS preset, as segment_video.py
    --mask; marks on later frames: the YouTube-VOS preset, as --mask_dir
    (frames before the first mark come back empty). Outputs appear only
    complete: an error or a cancel (the generator closed) leaves none.
    """
    if not video.marks:
        raise UserInputError(f'{video.name}: no object marked; mark at least one object, then Segment')
    objects = {i for labels in video.marks.values() for i in object_ids(labels)}
    youtube = set(video.marks) != {0}
    job = VideoJob(video.name, lambda: iter(open_video(video.source)), video.marks, os.path.join(folder, 'masks'),
                   frame_count=video.num_frames or None, num_objects=len(objects) if youtube else None,
                   log_folder=folder, log_name='memory_log', overlay=Overlay(os.path.join(folder, 'overlay.mp4'),
                                                                             video.fps))
    options = RunOptions(preset='youtube' if youtube else 'davis', size=reduced_short_side(video.size, size),
                         resume_every=0, save_memory_log=True)
    run = VideoRun(network, job, options)
    timeline, lowest = [], []
    webm = os.path.join(folder, 'overlay.webm')
    with Mp4Writer(webm, video.fps, fourcc='VP80') as page_video, closing(iter(run)) as frames:
        for frame in frames:
            if frame.index >= max_frames:
                # a container's frame count can be wrong: the limit holds for the frames decoded
                raise UserInputError(f'{video.name}: more frames than the limit of {max_frames} '
                                     f'(the container said {video.num_frames or "nothing"})')
            # reading the quality encodes the frame now rather than at the next step; the last
            # frame is scored too (one encoding more than segment_video.py, same masks)
            scores, decision = run.segmenter.quality, run.segmenter.decision
            quality = float(np.mean(list(scores.values()))) if scores else None
            overlay = blend(frame.rgb, frame.ids)
            page_video.write(overlay)
            timeline.append((frame.index, frame.name, quality, decision))
            if quality is not None:  # keep the CHECK_FIRST lowest: a heap on -quality
                entry = (-quality, frame.index, overlay, f'frame {frame.name}: quality {quality:.2f} ({decision})')
                (heapq.heappush if len(lowest) < CHECK_FIRST else heapq.heappushpop)(lowest, entry)
            yield frame.index + 1
    masks_zip = os.path.join(folder, 'masks.zip')
    with zipfile.ZipFile(masks_zip, 'w') as archive:
        for file in sorted(os.listdir(job.masks_dir)):
            archive.write(os.path.join(job.masks_dir, file), file)
    check_first = [(overlay, caption) for _, _, overlay, caption in sorted(lowest, reverse=True)]
    return Result(job.masks_dir, webm, job.overlay.path, masks_zip, run.outputs[2:], timeline, check_first)


def result_frame(video, masks_dir, names, index):
    """(overlay, caption) of frame `index` of a finished run, from the video and its written mask."""
    index = min(max(index, 0), len(names) - 1)
    labels, _ = read_label_mask(os.path.join(masks_dir, names[index] + '.png'))
    return blend(read_frame(video, index), labels), f'frame {names[index]}'


def private_folder():
    """A folder only this user can read (mkdtemp: mode 0700), removed when the process exits,
    also on SIGTERM (the usual way to stop a service), which Python would otherwise not clean up after."""
    folder = tempfile.mkdtemp(prefix='qdmn-app-')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # stops the server as Ctrl-C does
    return folder


def build_page(network, args, root):
    """The Gradio page; every upload and result stays under `root`."""
    import gradio as gr    # imported once GRADIO_TEMP_DIR points into the private folder (see main)
    import pandas as pd    # gradio's own dependency, for its plots and tables

    limits = Limits(args.max_frames, args.max_upload_mb)
    colours = ['#%02x%02x%02x' % tuple(DAVIS_PALETTE[k]) for k in range(1, MAX_OBJECTS + 1)]

    def readable(handler):
        """Bad input becomes one message on the page (gr.Error), not a traceback; warnings a notice."""
        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter('always')
                    result = handler(*args, **kwargs)
                for warning in caught:
                    gr.Warning(str(warning.message))
                return result
            except UserInputError as e:
                raise gr.Error(str(e), print_exception=False) from None
        return wrapped

    def editor_value(video, index):
        return {'background': marked_frame(video, index), 'layers': [], 'composite': None}

    def frame_updates(video, index):
        return editor_value(video, index), marks_summary(video)

    @readable
    def choose(path, name):
        folder = tempfile.mkdtemp(dir=root)
        video = open_choice(path, name, folder, limits)
        count = video.num_frames or limits.max_frames
        info = f'**{video.name}**: {video.size[1]}x{video.size[0]}, {video.num_frames or "?"} frames'
        return (video, gr.Slider(minimum=0, maximum=max(count - 1, 1), value=0, step=1, interactive=True),
                info, *frame_updates(video, 0))

    def choose_upload(file):
        if file is None:
            raise gr.Error('no file received')
        return choose(file, os.path.basename(file))

    def choose_sample():
        return choose(SAMPLE, 'the sample (judo.mp4)')

    def needs_video(video):
        if video is None:
            raise gr.Error('choose a video first (upload one or take the sample)')

    @readable
    def show_frame(video, index):
        needs_video(video)
        return frame_updates(video, int(index))

    @readable
    def add(video, index, edited, tool):
        needs_video(video)
        layers = (edited or {}).get('layers') or []
        layer = layers[0] if layers else np.zeros((*video.size, 4), np.uint8)
        if layer.shape[:2] != tuple(video.size):
            raise UserInputError('the drawing does not match the frame; choose the frame again')
        add_marks(video, int(index), layer, tool)
        return (video, *frame_updates(video, int(index)))

    @readable
    def undo_last(video, index):
        needs_video(video)
        undo(video)
        return (video, *frame_updates(video, int(index)))

    @readable
    def clear_all(video, index):
        needs_video(video)
        clear(video)
        return (video, *frame_updates(video, int(index)))

    def run(video, progress=gr.Progress()):
        """A generator, so that Cancel stops it between two frames (outputs: see `running` below)."""
        needs_video(video)
        folder = tempfile.mkdtemp(dir=root)
        total = video.num_frames or None
        frames = segment(video, network, args.size, folder, limits.max_frames)
        progress(0, desc='loading')
        try:
            while True:
                try:
                    done = next(frames)
                except StopIteration as finished:
                    result = finished.value
                    break
                progress((done, total) if total else done, desc='segmenting', unit='frames')
                yield (gr.skip(), f'Segmenting: {done} of {total or "?"} frames', *[gr.skip()] * 5)
        except UserInputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        # one colour per kind of decision: 'replaced 12' and 'replaced 30' are both 'replaced'
        rows = pd.DataFrame([(i, n, q, d, 'replaced' if d.startswith('replaced') else d)
                             for i, n, q, d in result.timeline if q is not None],
                            columns=['frame', 'name', 'quality', 'decision', 'memory'])
        lowest = rows.sort_values('quality').head(CHECK_FIRST)[['name', 'quality', 'decision']].round(3)
        yield (result.overlay_webm, f'Done: {len(result.timeline)} frames. The frames listed first need a look.',
               rows, lowest, result.check_first, [result.masks_zip, result.overlay_mp4, *result.memory_log],
               (result.masks_dir, [name for _, name, _, _ in result.timeline]))

    @readable
    def show_selected(video, last_run, selection: gr.SelectData):
        """A range dragged across the timeline shows its first frame."""
        if video is None or last_run is None:
            raise gr.Error('segment a video first')
        image, caption = result_frame(video, *last_run, math.ceil(selection.index[0]))
        return gr.Image(value=image, label=caption)

    with gr.Blocks(title='QDMN: segment your video') as page:
        video = gr.State(None)
        last_run = gr.State(None)   # (masks folder, frame names) of the last finished run
        gr.Markdown('# QDMN: segment your own video\nChoose a video, mark the objects on a frame, press '
                    '**Segment**; the quality timeline shows where tracking may have degraded.')
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown('### 1. Video')
                upload = gr.File(label=f'mp4, mov, avi or a zip of frames (at most {limits.max_upload_mb} MB, '
                                       f'{limits.max_frames} frames)',
                                 file_types=list(VIDEO_EXTENSIONS) + ['.zip'], type='filepath', elem_id='upload')
                sample = gr.Button('Use the sample (judo, 16 frames)', elem_id='sample')
                info = gr.Markdown('No video chosen.', elem_id='video_info')
                gr.Markdown('### 2. Mark objects\nPick an object\'s colour in the brush palette (object 1 = '
                            'first colour, ...). **box**: drag across the object from one corner to the '
                            'opposite one, GrabCut cuts it out. **brush**: paint the object. Then **Add**.')
                tool = gr.Radio(['box', 'brush'], value='box', label='tool', elem_id='tool')
                frame = gr.Slider(0, 1, value=0, step=1, label='frame to mark', interactive=False,
                                  elem_id='frame')
                with gr.Row():
                    add_button = gr.Button('Add', variant='primary', elem_id='add')
                    undo_button = gr.Button('Undo', elem_id='undo')
                    clear_button = gr.Button('Clear', elem_id='clear')
                marks = gr.Markdown('No object marked yet.', elem_id='marks')
            with gr.Column(scale=2):
                editor = gr.ImageEditor(label='frame (draw here)', type='numpy', sources=(), transforms=(),
                                        layers=False, elem_id='editor',
                                        brush=gr.Brush(colors=colours, default_color=colours[0], color_mode='fixed'))
        gr.Markdown('### 3. Segment')
        with gr.Row():
            segment_button = gr.Button('Segment', variant='primary', elem_id='segment')
            cancel_button = gr.Button('Cancel', variant='stop', elem_id='cancel')
        status = gr.Markdown('', elem_id='status')
        gr.Markdown('### 4. Results')
        with gr.Row():
            overlay = gr.Video(label='overlay', format=None, elem_id='overlay', interactive=False, loop=True)
            timeline = gr.ScatterPlot(x='frame', y='quality', color='memory', tooltip=['name', 'quality', 'decision'],
                                      label='quality and memory decision per frame (hover a point; drag '
                                            'across the plot to see a frame)',
                                      elem_id='timeline', height=320)
        with gr.Row():
            check_table = gr.Dataframe(label='check these first (lowest quality)', elem_id='check_table',
                                       interactive=False)
            check_gallery = gr.Gallery(label='lowest-quality frames', columns=3, height=320, elem_id='check_gallery')
        selected = gr.Image(label='frame chosen on the timeline', elem_id='selected', interactive=False, height=320)
        downloads = gr.File(label='downloads: masks (palette PNGs), overlay video, memory log (CSV and plot)', file_count='multiple',
                            interactive=False, elem_id='downloads')

        chosen = [video, frame, info, editor, marks]
        upload.upload(choose_upload, upload, chosen)
        sample.click(choose_sample, None, chosen)
        frame.release(show_frame, [video, frame], [editor, marks])
        add_button.click(add, [video, frame, editor, tool], [video, editor, marks])
        undo_button.click(undo_last, [video, frame], [video, editor, marks])
        clear_button.click(clear_all, [video, frame], [video, editor, marks])
        running = segment_button.click(run, video, [overlay, status, timeline, check_table, check_gallery, downloads,
                                                    last_run], concurrency_limit=1, concurrency_id='segment')
        timeline.select(show_selected, [video, last_run], selected)
        cancel_button.click(lambda: 'Cancelled.', None, status, cancels=[running])
    return page


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.host != '127.0.0.1':
        warnings.warn(f'--host {args.host}: the page (and the videos uploaded to it) is open to other machines')
    # videos of every size, objects joining mid-video: shapes change (no per-shape CUDA tuning)
    network = load_network(args.model, device=device, amp=args.amp, fixed_shapes=False)
    root = private_folder()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # not a line per run on the webm's codec tag
    # Gradio keeps uploads in GRADIO_TEMP_DIR, read when it is imported: point it into the private folder
    os.environ['GRADIO_TEMP_DIR'] = os.path.join(root, 'uploads')
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    page = build_page(network, args, root)
    print(f'serving on http://{args.host}:{args.port} (uploads and results in {root}, removed at exit)')
    try:    # serves until Ctrl-C or SIGTERM
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, max_file_size=f'{args.max_upload_mb}mb',
            allowed_paths=[root], show_error=True, inbrowser=False)
    finally:
        page.close()    # no request still writing into the private folder while it is removed


if __name__ == '__main__':
    run_main(main)
