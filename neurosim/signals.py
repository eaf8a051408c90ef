"""Ctrl-C and SIGTERM held while something must finish: a kernel call whose rows are to be
recorded, a result file being finished and named."""

import signal
import threading


class HeldSignals:
    """Holds Ctrl-C (SIGINT), and SIGTERM where the program handles it, until what runs
    inside has finished (the kernel call in flight, whose rows are then recorded; a file
    being finished and named); :meth:`deliver` then passes the signal on to its handler.
    Only the main thread receives signals; elsewhere this does nothing."""

    def __enter__(self):
        self.signum, self.previous = 0, {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):  # a Python handler (SIGINT's raises KeyboardInterrupt)
                self.previous[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame):
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def deliver(self):
        """Restore the handlers and pass a held signal on to its own."""
        handler = self.previous.get(self.signum)
        self.__exit__()
        if not self.signum:
            return
        if handler is not None:
            handler(self.signum, None)
        raise KeyboardInterrupt(self.name)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
