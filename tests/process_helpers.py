"""Finding the processes a test left behind."""
import psutil


def leftover_children() -> list:
    """This process's descendants, but multiprocessing's resource tracker and fork server."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd and "forkserver" not in cmd:
            out.append(child)
    return out
