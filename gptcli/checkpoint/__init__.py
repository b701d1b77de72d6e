"""The run directory's files, shared by every stage that reads or writes one: checkpoints
(store: atomic, loaded weights_only, exports read as checkpoints too), their format versions
(formats: older checkpoints converted exactly), and the lock that keeps one process per run
directory (lock). Imports model, config and the tokenizers; training, evaluate, generate,
interop and study import it, never the reverse."""

from gptcli.checkpoint.store import (
    CONFIG_FILE,
    EXPORT_FILE,
    EXPORT_WEIGHTS,
    MODEL_FILE,
    POINTER,
    TRAINER_FILE,
    Checkpoint,
    forget,
    has_checkpoint,
    is_export,
    load,
    load_model,
    read_pointer,
    resolve,
    save,
    step_dir_name,
    stored_tensor,
)

__all__ = [
    "CONFIG_FILE", "EXPORT_FILE", "EXPORT_WEIGHTS", "MODEL_FILE", "POINTER", "TRAINER_FILE",
    "Checkpoint", "forget", "has_checkpoint", "is_export", "load", "load_model",
    "read_pointer", "resolve", "save", "step_dir_name", "stored_tensor",
]  # fmt: skip
