"""Importing this module (before the first cv2.VideoCapture/VideoWriter) keeps FFmpeg's own log off stderr.

FFmpeg prints its decoder messages ("Invalid NAL unit size", thousands of them for a damaged
video) to file descriptor 2 from OpenCV's decoding thread, where no Python redirection reaches.
OpenCV reads OPENCV_FFMPEG_LOGLEVEL when it first uses FFmpeg; -8 is FFmpeg's AV_LOG_QUIET.
A level the user set (for debugging) wins. Problems still reach the user as our own errors.
"""
import os

os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
