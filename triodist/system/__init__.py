"""The process and its operating system: privileges, file descriptors, local-socket trust."""
