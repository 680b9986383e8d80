"""Built-in importance measures: one module per measure (docs/measures.md has the definitions)."""
import fp
from fp.discover import classes_in_package


@fp.hookimpl
def fp_register_measures():
    return classes_in_package(__name__, lambda cls: issubclass(cls, fp.Measure))
