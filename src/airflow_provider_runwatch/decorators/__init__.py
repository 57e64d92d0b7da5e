"""TaskFlow decorators (``@task.puffle_chat``, ``@task.gumloop_session``, ``@task.gloriamundo_workflow``)."""
