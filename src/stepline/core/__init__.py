"""stepline's core: steps, lifecycle, context, data flow. Public names live in ``stepline.base``."""
