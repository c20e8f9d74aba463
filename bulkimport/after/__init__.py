"""Operations on a finished or stopped import: finish its sessions, keep its chats quiet, undo it."""
