"""saywhy on a page: the local web app (``saywhy serve``) and the self-contained report (``saywhy report``).

Both are thin leaves over the library's public API: :mod:`saywhy.web.views` asks the
:class:`~saywhy.pipeline.ExplainerSession` (and :mod:`saywhy.apps`) for every number and
sentence and turns them into the context of the Jinja2 templates in ``templates/``, which
the app (:mod:`saywhy.web.app`) and the report (:mod:`saywhy.web.report`) both render.
Pictures are made by :mod:`saywhy.web.media` and handed out by id: the app keeps them in
memory (:class:`~saywhy.web.media.MediaStore`), the report embeds them as data URIs.
"""
