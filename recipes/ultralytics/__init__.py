"""The Ultralytics recipes, one per tutorial step (SPEC §3), in the order they are applied."""

from .add_modules import AddModules
from .channel_index import ChannelIndex
from .flops_stride import FlopsStride
from .fuse import Fuse
from .model_yaml import ModelYaml
from .optimizer_groups import OptimizerGroups
from .predict_once import PredictOnce
from .rect_off import RectOff
from .register import Register
from .repc3 import RepC3Hidden
from .rtdetr_predict import RtdetrPredict
from .stride_probe import StrideProbe

RECIPES = [
    AddModules(),
    Register(),
    ChannelIndex(),
    PredictOnce(),
    RtdetrPredict(),
    RepC3Hidden(),
    FlopsStride(),
    RectOff(),
    OptimizerGroups(),
    StrideProbe(),
    Fuse(),
    ModelYaml(),
]
ARCHS = ("rtdetr", "yolov8", "yolo11", "yolo12", "yolo26")  # families.py: the tasks of each, and since when
