"""Knowledge base: articles with versions, English and Chinese full-text search, gaps and feedback.

``KbService`` (async) serves the IVR's ``kb_answer`` node, the chat bot and agent assist; ``KbRepo``
(sync) is the same on the calling thread, for the CLI.
"""

from callcenter.kb.markdown import ArticleData, ArticleFormatError
from callcenter.kb.models import KbArticle, KbArticleVersion, KbFeedback, KbGap
from callcenter.kb.repo import KbError, KbRepo, SearchHit
from callcenter.kb.service import KbService

__all__ = [
    "ArticleData",
    "ArticleFormatError",
    "KbArticle",
    "KbArticleVersion",
    "KbError",
    "KbFeedback",
    "KbGap",
    "KbRepo",
    "KbService",
    "SearchHit",
]
