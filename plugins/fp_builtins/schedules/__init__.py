"""Built-in pruning schedules: one module per schedule."""
import fp
from fp.discover import classes_in_package


@fp.hookimpl
def fp_register_schedules():
    return classes_in_package(__name__, lambda cls: issubclass(cls, fp.Schedule))
