// A handler module that fails to load: ferry must report a start failure.
throw new Error('intentional load failure in broken.mjs');
